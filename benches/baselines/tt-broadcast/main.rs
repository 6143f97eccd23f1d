//! `baseline-tt`: a bare tokio-tungstenite broadcast server, the Rust fan-out baseline.
//!
//! Protocol: a client connected to `/pub` publishes (it receives nothing); every text or
//! binary message it sends goes to every client connected to any other path.
//!
//! The configuration is the tuned one of the neutral fan-out baseline this copies:
//! - a current-thread tokio runtime (the run script pins the process to one core);
//! - one task per connection, fan-out through a `tokio::sync::broadcast` channel of
//!   `Message` (the payload is a shared `Bytes`: framed per connection, never copied);
//! - `read_buffer_size` 4 KiB (tungstenite's 128 KiB default costs ~130 kB per idle
//!   connection and zero-fills that buffer on reads);
//! - write coalescing: after each received message, `feed` every message already queued
//!   for the connection, then one `flush` (one write syscall for all of them).
//!
//! It listens on 127.0.0.1 only and stops on SIGTERM or SIGINT.

use std::sync::atomic::{AtomicU64, Ordering};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[derive(Parser, Debug)]
#[command(about = "Bare tokio-tungstenite broadcast server (fan-out baseline), loopback only")]
struct Args {
    /// Port to listen on (127.0.0.1).
    #[arg(long, default_value_t = 9100)]
    port: u16,
    /// WebSocketConfig::read_buffer_size, bytes.
    #[arg(long, default_value_t = 4096)]
    read_buffer: usize,
    /// Broadcast channel capacity (messages a slow subscriber may fall behind before it
    /// skips some; skipped messages show up as lost in the load generator).
    #[arg(long, default_value_t = 4096)]
    capacity: usize,
    /// Listen backlog (the same as the Node server's).
    #[arg(long, default_value_t = 4096)]
    backlog: u32,
}

/// Messages subscribers skipped because they fell more than `--capacity` behind.
static LAGGED: AtomicU64 = AtomicU64::new(0);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Every subscriber holds a socket; allow as many as the hard limit does.
    let nofile = rlimit::increase_nofile_limit(u64::MAX)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(serve(args, nofile))
}

async fn serve(args: Args, nofile: u64) -> anyhow::Result<()> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], args.port).into())?;
    let listener: TcpListener = socket.listen(args.backlog)?;
    let config = WebSocketConfig::default().read_buffer_size(args.read_buffer);
    let (tx, _) = broadcast::channel::<Message>(args.capacity);
    eprintln!(
        "baseline-tt listening on 127.0.0.1:{} (read buffer {} B, capacity {}, open files {nofile})",
        args.port, args.read_buffer, args.capacity
    );
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        // A failed handshake or a reset connection only ends that connection.
                        let _ = connection(stream, tx, config).await;
                    });
                }
                Err(error) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    eprintln!("accept: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    eprintln!("baseline-tt stopping; subscribers skipped {} messages", LAGGED.load(Ordering::Relaxed));
    Ok(())
}

async fn connection(
    stream: TcpStream,
    tx: broadcast::Sender<Message>,
    config: WebSocketConfig,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    stream.set_nodelay(true)?;
    let mut path = String::new();
    #[allow(clippy::result_large_err, reason = "the error type is tungstenite's callback contract")]
    let record_path = |request: &Request, response: Response| {
        path = request.uri().path().to_owned();
        Ok(response)
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, record_path, Some(config)).await?;
    let (mut sink, mut stream) = ws.split();

    if path == "/pub" {
        while let Some(message) = stream.next().await {
            match message? {
                message @ (Message::Text(_) | Message::Binary(_)) => {
                    // Err only when nobody is subscribed.
                    let _ = tx.send(message);
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        return Ok(());
    }

    let mut rx = tx.subscribe();
    drop(tx);
    loop {
        tokio::select! {
            received = rx.recv() => {
                let message = match received {
                    Ok(message) => message,
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        LAGGED.fetch_add(skipped, Ordering::Relaxed);
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                // Coalescing: queue everything already waiting, then write it all at once.
                sink.feed(message).await?;
                loop {
                    match rx.try_recv() {
                        Ok(message) => sink.feed(message).await?,
                        Err(broadcast::error::TryRecvError::Lagged(skipped)) => {
                            LAGGED.fetch_add(skipped, Ordering::Relaxed);
                        }
                        Err(_) => break,
                    }
                }
                sink.flush().await?;
            }
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    Ok(())
}
