//! Frame codec: decoding device frames and encoding `Changes` frames once for fan-out.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group};
use prost::Message as _;
use syncline_proto::v1::{Ack, Changes, ClientFrame, ServerFrame, Subscribe, client_frame, server_frame};
use syncline_push::codec::{EncodedFrame, FrameFormat, decode_client};
use tokio_tungstenite::tungstenite::Message;

use crate::fixtures;

/// Record counts of the encoded `Changes` frames: a single live change and a full page.
const CHANGES_RECORDS: [u64; 2] = [1, 100];

fn ack_frame() -> ClientFrame {
    ClientFrame {
        msg: Some(client_frame::Msg::Ack(Ack {
            source: "Account".into(),
            key: "*".into(),
            cursor: 1_234_567,
            page: 42,
        })),
    }
}

fn subscribe_frame() -> ClientFrame {
    ClientFrame {
        msg: Some(client_frame::Msg::Subscribe(Subscribe {
            source: "Account".into(),
            key: "user-0042".into(),
            cursor: 1_234_567,
            page_size: 500,
            window: 4,
        })),
    }
}

fn changes_frame(records: u64) -> ServerFrame {
    let upserts = fixtures::records(1, records)
        .into_iter()
        .enumerate()
        .map(|(i, record)| syncline_proto::v1::Record { version: 1_000 + i as u64, ..record })
        .collect();
    ServerFrame {
        msg: Some(server_frame::Msg::Changes(Changes {
            source: "Account".into(),
            key: "*".into(),
            from: 1_000,
            to: 1_000 + records - 1,
            upserts,
            total: 50_000,
            checksum: 0x1234_5678_9abc_def0,
            ..Changes::default()
        })),
    }
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec/decode");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    for (name, frame) in [("ack", ack_frame()), ("subscribe", subscribe_frame())] {
        let binary = Message::Binary(Bytes::from(frame.encode_to_vec()));
        let json = Message::Text(serde_json::to_string(&frame).expect("frames serialise").into());
        for (format, message) in [("binary", binary), ("json", json)] {
            group.throughput(Throughput::Bytes(message.len() as u64));
            group.bench_function(BenchmarkId::new(name, format), |b| {
                b.iter(|| decode_client(black_box(&message)).expect("valid frame"));
            });
        }
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec/encode_changes");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    for records in CHANGES_RECORDS {
        let frame = changes_frame(records);
        group.throughput(Throughput::Elements(records));
        // Protobuf encoding, done once per published frame; the clone is setup, not measured.
        group.bench_function(BenchmarkId::new("binary", records), |b| {
            b.iter_batched(|| frame.clone(), EncodedFrame::new, BatchSize::SmallInput);
        });
        // The JSON message, made the first time a text connection needs the frame.
        group.bench_function(BenchmarkId::new("json_message", records), |b| {
            // By reference, so dropping the frame is not measured.
            b.iter_batched_ref(
                || EncodedFrame::new(frame.clone()),
                |encoded| encoded.message(FrameFormat::Json),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, decode, encode);
