//! The `dns` frontend (not yet implemented: its issue builds it).

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::serve::{Gateway, StartError};

/// Binds the `[dns]` listeners and spawns their tasks.
pub async fn start(gw: &Arc<Gateway>) -> Result<Vec<JoinHandle<()>>, StartError> {
    match &gw.config.dns {
        Some(s) if !s.listen.is_empty() => Err(StartError::Other(
            "not yet implemented: the dns frontend ([dns] in the config)".into(),
        )),
        _ => Ok(Vec::new()),
    }
}
