//! The `dns` frontend (not yet implemented: its issue builds it).

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::serve::{Gateway, StartError};

/// Binds the `[dns]` listeners and spawns their tasks.
pub async fn start(gw: &Arc<Gateway>) -> Result<Vec<JoinHandle<()>>, StartError> {
    let _ = gw;
    Ok(Vec::new())
}
