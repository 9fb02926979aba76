//! The UDP/TCP relays (placeholder while being built).

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::serve::{Gateway, StartError};

/// Binds the `[[relay]]` listeners and spawns their tasks.
pub async fn start(gw: &Arc<Gateway>) -> Result<Vec<JoinHandle<()>>, StartError> {
    if gw.config.relay.is_empty() {
        Ok(Vec::new())
    } else {
        Err(StartError::Other(
            "not yet implemented: relays ([[relay]] in the config)".into(),
        ))
    }
}
