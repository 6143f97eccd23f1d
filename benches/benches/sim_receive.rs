//! The load simulator's receive path: what a fleet device pays per `Changes` frame to account
//! for it. `full` is the decode `syncline-sim` used to do (every record built, then
//! `parse_probe` over them); `lean` is [`LeanFrame::decode`], which reads only the range, the
//! flags and the probe fields.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use prost::Message as _;
use syncline_client_sim::{
    LeanFrame,
    probe::{RUN_FIELD, SENT_NS_FIELD},
};
use syncline_proto::v1::{Changes, Record, ServerFrame, Value, server_frame};

/// Records per frame: one live change (`fanout` at 100/s), and the ~33 a burst's live frames
/// carried on average (`fanout-burst`, see docs/PERFORMANCE.md).
const FRAME_RECORDS: [u64; 2] = [1, 33];

/// Returns probe `n` as `syncline-sim fanout` pushes it and the server sends it back.
fn probe_record(n: u64) -> Record {
    Record {
        id: format!("sim-latency-{n:06}"),
        fields: BTreeMap::from([
            ("name".to_owned(), Value::string(format!("latency probe {n}"))),
            ("seq".to_owned(), Value::int(n as i64)),
            (RUN_FIELD.to_owned(), Value::int(3_141_592_653)),
            (SENT_NS_FIELD.to_owned(), Value::int(12_345_678_901 + n as i64 * 1_000)),
        ]),
        version: 1_000 + n,
    }
}

/// Returns the binary live `Changes` frame of `records` probes.
fn live_frame(records: u64) -> Bytes {
    let frame = ServerFrame {
        msg: Some(server_frame::Msg::Changes(Changes {
            source: "Account".into(),
            key: "*".into(),
            from: 1_000,
            to: 1_000 + records - 1,
            upserts: (0..records).map(probe_record).collect(),
            total: 50_000,
            checksum: 0x1234_5678_9abc_def0,
            ..Changes::default()
        })),
    };
    Bytes::from(frame.encode_to_vec())
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("sim_receive/decode");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for records in FRAME_RECORDS {
        let bytes = live_frame(records);
        group.throughput(Throughput::Elements(records));
        group.bench_function(BenchmarkId::new("full", records), |b| {
            b.iter(|| {
                let frame = ServerFrame::decode(black_box(bytes.clone())).expect("a valid frame");
                LeanFrame::from_frame(frame)
            });
        });
        group.bench_function(BenchmarkId::new("lean", records), |b| {
            b.iter(|| LeanFrame::decode(black_box(&bytes)).expect("a valid frame"));
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
