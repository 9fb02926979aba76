//! The `tls` frontend (not yet implemented: its issue builds it).

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::serve::{Gateway, StartError};

/// Binds the `[tls]` listeners and spawns their tasks.
pub async fn start(gw: &Arc<Gateway>) -> Result<Vec<JoinHandle<()>>, StartError> {
    match &gw.config.tls {
        Some(s) if !s.listen.is_empty() => Err(StartError::Other(
            "not yet implemented: the tls frontend ([tls] in the config)".into(),
        )),
        _ => Ok(Vec::new()),
    }
}
