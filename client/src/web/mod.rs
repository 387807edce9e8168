//! The local web app (`sotto app`): placeholder until the app lands.

use std::net::SocketAddr;

use crate::service::Handle;

/// The web app for one service.
pub struct WebApp {
    addr: SocketAddr,
    _handle: Handle,
}

impl WebApp {
    /// Serves `handle`'s profile on `addr` (127.0.0.1 only).
    pub fn new(handle: Handle, addr: SocketAddr) -> anyhow::Result<WebApp> {
        anyhow::ensure!(addr.ip().is_loopback(), "the app serves 127.0.0.1 only");
        Ok(WebApp {
            addr,
            _handle: handle,
        })
    }

    /// The address to open.
    pub fn launch_url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Every route.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
    }
}
