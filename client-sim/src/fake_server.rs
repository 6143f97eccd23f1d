//! A scripted fake of the server's side of the device protocol, on 127.0.0.1, for
//! socket-level tests: this crate's own and the `syncline-sim` CLI's (feature `test-util`).
//! Every step panics when the device does not do what the test scripted.

use std::{sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use syncline_proto::{
    SUBPROTOCOL,
    checksum::Checksum,
    v1::{
        Changes, ClientFrame, Record, ServerFrame, SourceInfo, SyncState, SyncStatus, Value, Welcome, client_frame,
        hello, server_frame,
    },
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    time::timeout,
};
use tokio_tungstenite::{
    WebSocketStream, accept_hdr_async,
    tungstenite::{
        Message,
        handshake::server::{Request, Response},
        http::HeaderValue,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};

/// Longest wait for any single step; generous for a loaded 2-core CI machine.
pub const STEP: Duration = Duration::from_secs(10);
/// The source of the scripted partition.
pub const SOURCE: &str = "Account";
/// The user (and partition key) the fake server welcomes.
pub const USER: &str = "u1";

/// A device connection's byte stream: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A listener that plays the server's side of the device protocol as each test scripts it.
pub struct FakeServer {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl FakeServer {
    /// Starts a plain (`ws://`) server on a free loopback port.
    pub async fn start() -> Self {
        Self { listener: TcpListener::bind("127.0.0.1:0").await.unwrap(), tls: None }
    }

    /// Starts a TLS server for `localhost`; returns it and the PEM of its self-signed
    /// certificate.
    pub async fn start_tls() -> (Self, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)
            .unwrap();
        let mut server = Self::start().await;
        server.tls = Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)));
        (server, certified.cert.pem())
    }

    /// Returns the device endpoint: `ws://127.0.0.1:PORT/v1/sync`, or
    /// `wss://localhost:PORT/v1/sync` with TLS.
    pub fn url(&self) -> String {
        let port = self.listener.local_addr().unwrap().port();
        match self.tls {
            Some(_) => format!("wss://localhost:{port}/v1/sync"),
            None => format!("ws://127.0.0.1:{port}/v1/sync"),
        }
    }

    /// Accepts the next device, agreeing to the `syncline.v1` subprotocol it must ask for.
    // The callback's error type is tungstenite's `ErrorResponse`, not ours to shrink.
    #[allow(clippy::result_large_err)]
    pub async fn accept(&self) -> Peer {
        let (tcp, _) = timeout(STEP, self.listener.accept()).await.expect("a device connects").unwrap();
        let stream: Box<dyn Io> = match &self.tls {
            Some(acceptor) => Box::new(acceptor.accept(tcp).await.unwrap()),
            None => Box::new(tcp),
        };
        let socket = accept_hdr_async(stream, |request: &Request, mut response: Response| {
            let asked = request.headers().get("sec-websocket-protocol").and_then(|value| value.to_str().ok());
            assert_eq!(asked, Some(SUBPROTOCOL));
            response.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static(SUBPROTOCOL));
            Ok(response)
        })
        .await
        .unwrap();
        Peer { socket, json: false }
    }
}

/// The server's end of one device connection.
pub struct Peer {
    /// The WebSocket, for tests that script raw messages.
    pub socket: WebSocketStream<Box<dyn Io>>,
    /// Whether the device spoke JSON; the server then answers in JSON.
    pub json: bool,
}

impl Peer {
    /// Returns the next client frame (binary or JSON), skipping pings and pongs.
    pub async fn recv(&mut self) -> ClientFrame {
        loop {
            let message = timeout(STEP, self.socket.next()).await.expect("a client frame in time");
            match message {
                Some(Ok(Message::Binary(bytes))) => return ClientFrame::decode(bytes).unwrap(),
                Some(Ok(Message::Text(text))) => {
                    self.json = true;
                    return serde_json::from_str(text.as_str()).unwrap();
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected a client frame, got {other:?}"),
            }
        }
    }

    /// Expects a Hello; returns its credentials and client id.
    pub async fn recv_hello(&mut self) -> (hello::Credentials, String) {
        match self.recv().await.msg {
            Some(client_frame::Msg::Hello(hello)) => (hello.credentials.unwrap(), hello.client_id),
            other => panic!("expected hello, got {other:?}"),
        }
    }

    /// Returns the next frame that is not an ack (live acks are debounced and may come in
    /// between).
    pub async fn recv_non_ack(&mut self) -> client_frame::Msg {
        loop {
            match self.recv().await.msg.unwrap() {
                client_frame::Msg::Ack(_) => {}
                other => return other,
            }
        }
    }

    /// Returns the next ack as (cursor, page).
    pub async fn recv_ack(&mut self) -> (u64, u64) {
        match self.recv().await.msg {
            Some(client_frame::Msg::Ack(ack)) => {
                assert_eq!((ack.source.as_str(), ack.key.as_str()), (SOURCE, USER));
                (ack.cursor, ack.page)
            }
            other => panic!("expected an ack, got {other:?}"),
        }
    }

    /// Returns the close frame the device sent, or `None` when the connection just ended.
    pub async fn recv_end(&mut self) -> Option<CloseFrame> {
        loop {
            match timeout(STEP, self.socket.next()).await.expect("the connection ends in time") {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(Message::Binary(_) | Message::Text(_) | Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Frame(_))) | Some(Err(_)) | None => return None,
            }
        }
    }

    /// Sends a server frame, in JSON when the device spoke JSON.
    pub async fn send(&mut self, msg: server_frame::Msg) {
        let frame = ServerFrame { msg: Some(msg) };
        let message = if self.json {
            Message::text(serde_json::to_string(&frame).unwrap())
        } else {
            Message::binary(frame.encode_to_vec())
        };
        self.socket.send(message).await.unwrap();
    }

    /// Closes the connection with `code` and `reason`.
    pub async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
        let _ = self.socket.close(Some(frame)).await;
    }

    /// Sends a Welcome for [`USER`] with session token `token`, offering [`SOURCE`].
    pub async fn welcome(&mut self, token: &str) {
        self.send(server_frame::Msg::Welcome(Welcome {
            client_id: "c1".into(),
            session_token: token.into(),
            user_id: USER.into(),
            sources: vec![SourceInfo { name: SOURCE.into(), partitioning: "user".into(), keys: vec![USER.into()] }],
            ..Welcome::default()
        }))
        .await;
    }

    /// Expects a Subscribe to the test partition and returns its cursor.
    pub async fn recv_subscribe(&mut self) -> u64 {
        match self.recv_non_ack().await {
            client_frame::Msg::Subscribe(subscribe) => {
                assert_eq!((subscribe.source.as_str(), subscribe.key.as_str()), (SOURCE, USER));
                subscribe.cursor
            }
            other => panic!("expected subscribe, got {other:?}"),
        }
    }

    /// Sends the partition's caught-up state at `cursor`, holding `records`.
    pub async fn send_caught_up(&mut self, cursor: u64, records: &[Record]) {
        let mut checksum = Checksum::default();
        for record in records {
            checksum.add(&record.id, record.version);
        }
        self.send(server_frame::Msg::SyncState(SyncState {
            source: SOURCE.into(),
            key: USER.into(),
            status: SyncStatus::CaughtUp as i32,
            cursor,
            total: records.len() as u64,
            checksum: checksum.0,
            error: None,
        }))
        .await;
    }
}

/// Returns record `id` at `version`, named `id@version`.
pub fn record(id: &str, version: u64) -> Record {
    Record {
        id: id.to_owned(),
        fields: [("name".to_owned(), Value::string(format!("{id}@{version}")))].into(),
        version,
    }
}

/// Returns snapshot page `page` of the test partition at `to`.
pub fn snapshot(page: u64, to: u64, upserts: &[Record], reset: bool, done: bool) -> server_frame::Msg {
    server_frame::Msg::Changes(Changes {
        source: SOURCE.into(),
        key: USER.into(),
        from: 0,
        to,
        upserts: upserts.to_vec(),
        page,
        snapshot: true,
        reset,
        snapshot_done: done,
        ..Changes::default()
    })
}

/// Returns a live push of changes `from..=to` of the test partition.
pub fn live(from: u64, to: u64, upserts: &[Record], deletes: &[&str]) -> server_frame::Msg {
    server_frame::Msg::Changes(Changes {
        source: SOURCE.into(),
        key: USER.into(),
        from,
        to,
        upserts: upserts.to_vec(),
        deletes: deletes.iter().map(|id| (*id).to_owned()).collect(),
        ..Changes::default()
    })
}

/// Runs a session from Hello to caught up at cursor 2 holding a and b.
pub async fn catch_up(peer: &mut Peer) -> Vec<Record> {
    let records = vec![record("a", 1), record("b", 2)];
    peer.welcome("t1").await;
    assert_eq!(peer.recv_subscribe().await, 0);
    peer.send(snapshot(1, 2, &records[..1], true, false)).await;
    peer.send(snapshot(2, 2, &records[1..], false, true)).await;
    assert_eq!(peer.recv_ack().await, (0, 1));
    assert_eq!(peer.recv_ack().await, (2, 2));
    peer.send_caught_up(2, &records).await;
    records
}
