//! TLS on both listeners with a generated self-signed certificate, and graceful shutdown.

use std::time::Duration;

use syncline_client_sim::{ConnectOptions, Connection, Device, DeviceConfig, Incoming, SubscriptionConfig};
use syncline_proto::close_code;
use syncline_proto::v1::ingest_client::IngestClient;
use syncline_proto::v1::{ClientFrame, Hello, Login, PushRequest, client_frame, hello, server_frame};
use syncline_tests::{DEADLINE, TestServer, assert_converges, record};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_wss_and_grpc_with_a_self_signed_certificate() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("self-signed certificate");
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    let cert_pem = certified.cert.pem();
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();

    let server = TestServer::start_with(|config| {
        config.tls.cert = Some(cert_path.clone());
        config.tls.key = Some(key_path.clone());
    })
    .await;
    assert!(server.url().starts_with("wss://"));
    server.add_user("ann", "ann-pw");

    // gRPC over TLS, trusting the generated certificate.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(server.server.grpc_url())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("gRPC over TLS connects");
    let mut ingest = IngestClient::new(channel);
    ingest
        .push(PushRequest {
            source: "Account".into(),
            key: "*".into(),
            upserts: vec![record("a1", 1), record("a2", 2)],
            deletes: vec![],
        })
        .await
        .expect("push over TLS");

    // A device over wss://.
    let config = DeviceConfig::new(server.url(), "ann", "ann-pw")
        .with_ca_cert_pem(cert_pem.clone().into_bytes())
        .subscribe(SubscriptionConfig::new("Account"));
    let phone = Device::start(config);
    assert_converges(&phone, &server, "Account", "*", DEADLINE).await;
    phone.stop().await;

    // Plain ws:// to a TLS listener does not get a session.
    let plain = server.url().replacen("wss://", "ws://", 1);
    let options = ConnectOptions { connect_timeout: Duration::from_secs(5), ..ConnectOptions::default() };
    assert!(Connection::connect(&plain, &options).await.is_err());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_devices_to_reconnect_now() {
    let server = TestServer::start().await;
    server.add_user("ann", "ann-pw");
    let mut connection = Connection::connect(&server.url(), &ConnectOptions::default()).await.unwrap();
    let hello = ClientFrame {
        msg: Some(client_frame::Msg::Hello(Hello {
            protocol_version: 1,
            credentials: Some(hello::Credentials::Login(Login { username: "ann".into(), password: "ann-pw".into() })),
            ..Hello::default()
        })),
    };
    connection.send(&hello).await.unwrap();
    match connection.recv().await.unwrap() {
        Incoming::Frame(frame) => assert!(matches!(frame.msg, Some(server_frame::Msg::Welcome(_)))),
        other => panic!("expected Welcome, got {other:?}"),
    }
    let stopping = tokio::spawn(server.stop());
    let closed = tokio::time::timeout(DEADLINE, connection.recv()).await.expect("closed in time").unwrap();
    assert_eq!(closed, Incoming::Closed { code: close_code::SERVICE_RESTART, reason: "server restarting".into() });
    stopping.await.unwrap();
}
