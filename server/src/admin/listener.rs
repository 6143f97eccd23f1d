//! The admin listener: plain TCP, or TLS when `tls.cert`/`tls.key` are set (handshakes run
//! off the accept loop, each bounded in time, so a slow client cannot stall others), served
//! by axum with each connection's peer address.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections whose handshake finished, waiting to be served: the accept loop waits when
/// it is full.
const HANDSHAKEN_QUEUE: usize = 64;

/// The peer address of an admin connection (what login limits count by).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// A bound admin listener, plain or TLS.
pub struct AdminListener {
    local_addr: SocketAddr,
    incoming: Incoming,
}

enum Incoming {
    Plain(TcpListener),
    /// Connections that completed their TLS handshake.
    Tls(mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>),
}

impl AdminListener {
    /// Serves `listener` plain, or with `tls` (its handshakes run on `tracker` until
    /// `shutdown`).
    pub fn new(
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let incoming = match tls {
            None => Incoming::Plain(listener),
            Some(acceptor) => {
                let (sender, receiver) = mpsc::channel(HANDSHAKEN_QUEUE);
                tracker.spawn(accept_tls(listener, acceptor, sender, tracker.clone(), shutdown.clone()));
                Incoming::Tls(receiver)
            }
        };
        Ok(Self { local_addr, incoming })
    }
}

/// Accepts connections and runs each one's handshake in its own task until `shutdown`.
async fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::debug!(%error, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tracker.spawn(async move {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send((stream, peer)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "admin TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "admin TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for AdminListener {
    type Io = Either<TcpStream, TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match &mut self.incoming {
            Incoming::Plain(listener) => {
                // axum's accept retries failed accepts itself.
                let (stream, peer) = axum::serve::Listener::accept(listener).await;
                (Either::Left(stream), peer)
            }
            Incoming::Tls(ready) => match ready.recv().await {
                Some((stream, peer)) => (Either::Right(stream), peer),
                // Shutting down: graceful shutdown ends the server.
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

impl Connected<IncomingStream<'_, AdminListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, AdminListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// Serves `router` on `listener` on `tracker` until `shutdown`; requests in flight finish.
pub fn serve(
    listener: AdminListener,
    router: Router,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> JoinHandle<()> {
    let shutdown = shutdown.clone();
    let service = router.into_make_service_with_connect_info::<PeerAddr>();
    tracker.spawn(async move {
        let served = axum::serve(listener, service).with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(error) = served.await {
            tracing::warn!(%error, "admin listener ended with an error");
        }
    })
}
