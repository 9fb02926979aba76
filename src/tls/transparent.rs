//! The `[tls]` transparent listener, for traffic the lab router redirects to the gateway
//! (nftables `redirect` / `dnat`).
//!
//! The original destination comes from `SO_ORIGINAL_DST` (conntrack). The first bytes are
//! read, not decrypted: a TLS ClientHello gives the SNI, a plain HTTP request its Host and
//! path. The verdict is enacted (RST, swallow, blockpage for plain HTTP), or the bytes are
//! spliced to the original destination, throttled if the rule says so. A connection that was
//! not redirected (e.g. `curl --connect-to` straight to the listener) is sent to the sniffed
//! name's address, on the Host's port or `direct_tls_port`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::intercept::{self, Interceptor};
use crate::enforce::blockpage;
use crate::enforce::conn::Hello;
use crate::enforce::flow::{self, FlowCtx, Sniffed};
use crate::enforce::throttle::Throttled;
use crate::enforce::verdict::Verdict;
use crate::gateway::{Gateway, StartError};
use crate::listen::{self, Admit, Listen};

/// How long connecting to the origin may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the `[tls]` listeners and spawns their tasks.
pub async fn start(gw: &Arc<Gateway>) -> Result<Vec<JoinHandle<()>>, StartError> {
    let Some(section) = &gw.config.tls else {
        return Ok(Vec::new());
    };
    let icp = match &section.intercept {
        Some(i) if !section.listen.is_empty() => {
            let base = gw
                .config
                .path
                .as_deref()
                .and_then(std::path::Path::parent)
                .unwrap_or(std::path::Path::new(""));
            let icp = Interceptor::load(i, base)
                .map_err(|e| StartError::Other(format!("[tls] intercept: {e}")))?;
            tracing::warn!("TLS interception is ON: clients must trust the lab CA, and the gateway reads their HTTPS");
            Some(Arc::new(icp))
        }
        _ => None,
    };
    let opts = Listen {
        name: "tls",
        max_connections: section.max_connections,
        // Unmapped clients are reset by `handle` (and counted there).
        admit: Admit::Everyone,
    };
    let mut tasks = Vec::new();
    for addr in &section.listen {
        let listener = listen::bind(gw, "tls", *addr).await?;
        let (g, icp) = (Arc::clone(gw), icp.clone());
        tasks.push(tokio::spawn(listen::serve(
            Arc::clone(gw),
            listener,
            opts,
            move |c| handle(Arc::clone(&g), c.stream, c.peer, c.local, icp.clone()),
        )));
    }
    Ok(tasks)
}

/// The destination the client meant, if the connection was redirected to us.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let sock = SockRef::from(stream);
    let local = stream.local_addr().ok()?;
    let dst = if local.is_ipv4() {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    };
    let dst = dst.ok()?.as_socket()?;
    // Without a redirect, conntrack reports the listener itself.
    (dst != local).then_some(dst)
}

async fn handle(
    gw: Arc<Gateway>,
    mut client: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    icp: Option<Arc<Interceptor>>,
) {
    let _active = flow::ActiveFlow::new(&gw.metrics);
    let Some(mut ctx) = FlowCtx::new(&gw, peer, local) else {
        gw.record_refused("tls", peer, "");
        tracing::info!(client.addr = %peer, decision = "refused", "client is in no configured network");
        flow::reset(client);
        return;
    };
    let section = gw.config.tls.as_ref();
    let hold = Duration::from_secs(section.map_or(120, |s| s.hold_secs));
    let direct_port = section.map_or(443, |s| s.direct_tls_port);
    let orig = original_dst(&client);
    let mut first = Vec::new();
    let sniffed = flow::sniff(&mut client, &mut first, ctx.reassemble()).await;
    let name = sniffed.name().unwrap_or("").to_string();
    // The connection as the censor sees it: server port, ClientHello (ECH, JA4), address.
    ctx.saw(&sniffed);
    ctx.known.dst = orig.map(|d| d.ip());
    ctx.tcp_port(match (&orig, &sniffed) {
        (Some(d), _) => d.port(),
        (None, Sniffed::Http(Some(h))) => h.port.unwrap_or(80),
        (None, _) => direct_port,
    });
    let route = ctx
        .route(ctx.for_sniffed(&sniffed), &name, orig.map(|d| d.ip()))
        .await;
    if let Some(e) = &route.unresolved {
        tracing::info!(name, error = %e, "cannot resolve");
    }
    let v = route.verdict;
    let dest = orig.or_else(|| {
        let port = match &sniffed {
            Sniffed::Http(Some(h)) => h.port.unwrap_or(80),
            _ => direct_port,
        };
        route.addr.map(|ip| SocketAddr::new(ip, port))
    });
    let target = match &sniffed {
        Sniffed::Http(Some(h)) => format!("http://{}{}", h.host, h.path),
        _ if !name.is_empty() => name.clone(),
        _ => dest.map(|d| d.to_string()).unwrap_or_default(),
    };
    ctx.record(v, "tls", &target);
    let rule = ctx.rule_id(v).to_string();
    let shown_dest = dest.map(|d| d.to_string()).unwrap_or_default();
    if !v.passes() {
        tracing::info!(client.addr = %peer, dest = shown_dest, tls.sni = name, decision = v.name(), rule, "blocked");
    }
    match v {
        Verdict::Blockpage { rule } => {
            let url = match &sniffed {
                Sniffed::Http(Some(h)) => format!("http://{}{}", h.host, h.path),
                _ => format!("http://{name}/"),
            };
            let pg = blockpage::page(
                &ctx.policy,
                ctx.j,
                ctx.isp,
                rule,
                &url,
                &format!("http://{local}/"),
            );
            drop(ctx);
            let _ = client.write_all(&pg.to_bytes()).await;
            let _ = client.shutdown().await;
        }
        Verdict::Reset { .. } => flow::reset(client),
        Verdict::Drop { .. } => flow::swallow(&mut client, hold).await,
        Verdict::Pass | Verdict::Throttle { .. } | Verdict::Freeze { .. } => {
            let Some(dest) = dest.filter(|d| *d != local) else {
                tracing::info!(client.addr = %peer, tls.sni = name, "no destination: not redirected and no name");
                return;
            };
            if let (Some(icp), Sniffed::Tls(Some(Hello { sni: Some(_), .. }))) = (icp, &sniffed) {
                let client = Throttled::new(flow::Prefixed::new(first, client), v.kbps());
                intercept::serve(icp, ctx, client, name, dest).await;
                return;
            }
            let up = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(dest)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(dest = %dest, error = %e, "origin unreachable");
                    flow::reset(client);
                    return;
                }
                Err(_) => {
                    tracing::info!(dest = %dest, "origin connect timed out");
                    return;
                }
            };
            let _ = up.set_nodelay(true);
            let observer = Some(ctx.observer("tls", dest, &dest.to_string()));
            drop(ctx);
            match v {
                Verdict::Throttle { kbps, .. } => {
                    tracing::info!(client.addr = %peer, dest = %dest, tls.sni = name, decision = "throttle", rule, kbps, "throttled");
                }
                Verdict::Freeze { after_bytes, .. } => {
                    tracing::info!(client.addr = %peer, dest = %dest, tls.sni = name, decision = "freeze", rule, after_bytes, "freezing");
                }
                _ => {}
            }
            match flow::splice(client, &first, up, v, hold, observer).await {
                Ok((up, down)) => tracing::debug!(dest = %dest, up, down, "flow closed"),
                Err(e) => tracing::debug!(dest = %dest, error = %e, "flow ended"),
            }
        }
    }
}
