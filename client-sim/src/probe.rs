//! Probe records: what a load run writes so that devices can tell its records from others and
//! time them. A probe carries its run's tag and its send time, either in two int fields
//! ([`RUN_FIELD`], [`SENT_NS_FIELD`]) or, for sources with a fixed schema, in the text of a
//! string field ([`PROBE_NAME_FIELD`], as [`probe_name`] writes it).
//!
//! [`parse_probe`] reads a decoded [`Record`]; [`crate::lean_frame`] reads the same thing
//! straight from a frame's bytes, with the rules shared through [`int_probe`] and
//! [`probe_in_name`].

use syncline_proto::v1::{Record, value::Kind};

/// Record field carrying the push time, in ns since the run's start.
pub const SENT_NS_FIELD: &str = "sent_ns";
/// Record field carrying the run's tag, so records of earlier runs are not counted.
pub const RUN_FIELD: &str = "run";
/// String field that carries a probe in sources with a fixed schema (no `run` or `sent_ns`
/// fields), as [`probe_name`] writes it.
pub const PROBE_NAME_FIELD: &str = "name";
/// How a probe carried in [`PROBE_NAME_FIELD`] starts.
const PROBE_NAME_PREFIX: &str = "syncline-sim probe";

/// What a probe record says: the run it belongs to and when it was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The run's tag.
    pub run: i64,
    /// ns since the run's start, on the run's monotonic clock.
    pub sent_ns: u64,
}

/// Returns the `name` text of a probe: `syncline-sim probe run=<tag> sent_ns=<ns> seq=<i>`
/// (`seq` tells probes of one run apart for a reader; [`parse_probe`] ignores it).
pub fn probe_name(run: i64, sent_ns: u64, seq: u64) -> String {
    format!("{PROBE_NAME_PREFIX} run={run} sent_ns={sent_ns} seq={seq}")
}

/// Recognises a probe record: either int fields `run` and `sent_ns`, or a string `name`
/// field as [`probe_name`] writes it. Anything else (ordinary records, malformed probes) is
/// `None`. A negative `sent_ns` field reads as 0.
pub fn parse_probe(record: &Record) -> Option<Probe> {
    let field = |name: &str| record.fields.get(name).and_then(|value| value.kind.as_ref());
    let int_field = |name: &str| match field(name) {
        Some(Kind::IntValue(number)) => Some(*number),
        _ => None,
    };
    int_probe(int_field(RUN_FIELD), int_field(SENT_NS_FIELD)).or_else(|| match field(PROBE_NAME_FIELD) {
        Some(Kind::StringValue(name)) => probe_in_name(name),
        _ => None,
    })
}

/// Returns the probe of a record whose int fields `run` and `sent_ns` hold these values
/// (`None` for a field that is missing or not an int).
pub fn int_probe(run: Option<i64>, sent_ns: Option<i64>) -> Option<Probe> {
    Some(Probe { run: run?, sent_ns: u64::try_from(sent_ns?).unwrap_or(0) })
}

/// Returns the probe written in a `name` field's text, if it is one.
pub fn probe_in_name(name: &str) -> Option<Probe> {
    let rest = name.strip_prefix(PROBE_NAME_PREFIX)?;
    let (mut run, mut sent_ns) = (None, None);
    for word in rest.split_whitespace() {
        let (key, value) = word.split_once('=')?;
        match key {
            "run" => run = Some(value.parse().ok()?),
            "sent_ns" => sent_ns = Some(value.parse().ok()?),
            _ => {}
        }
    }
    Some(Probe { run: run?, sent_ns: sent_ns? })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use syncline_proto::v1::Value;

    use super::*;

    fn probe(id: &str, run: i64, sent_ns: i64) -> Record {
        let mut fields = BTreeMap::new();
        fields.insert(RUN_FIELD.to_owned(), Value::int(run));
        fields.insert(SENT_NS_FIELD.to_owned(), Value::int(sent_ns));
        Record { id: id.to_owned(), fields, version: 0 }
    }

    fn named(name: &str) -> Record {
        let mut fields = BTreeMap::new();
        fields.insert(PROBE_NAME_FIELD.to_owned(), Value::string(name));
        fields.insert("industry".to_owned(), Value::string("probes"));
        Record { id: "n".to_owned(), fields, version: 0 }
    }

    #[test]
    fn probes_are_read_from_int_fields_or_from_the_name() {
        assert_eq!(parse_probe(&probe("a", 7, 1_500)), Some(Probe { run: 7, sent_ns: 1_500 }));
        assert_eq!(parse_probe(&probe("a", -3, -1)), Some(Probe { run: -3, sent_ns: 0 }));
        let name = probe_name(42, 123_456_789, 9);
        assert_eq!(name, "syncline-sim probe run=42 sent_ns=123456789 seq=9");
        assert_eq!(parse_probe(&named(&name)), Some(Probe { run: 42, sent_ns: 123_456_789 }));
        // Order and unknown words do not matter; missing or malformed numbers do.
        let reordered = named("syncline-sim probe seq=1 extra=x sent_ns=5 run=-2");
        assert_eq!(parse_probe(&reordered), Some(Probe { run: -2, sent_ns: 5 }));
        for name in [
            "Acme Corp",
            "",
            "syncline-sim probe",
            "syncline-sim probe run=1",
            "syncline-sim probe sent_ns=1",
            "syncline-sim probe run=x sent_ns=1",
            "syncline-sim probe run=1 sent_ns=-1",
            "syncline-sim probe run=1 sent_ns=99999999999999999999",
            "syncline-sim probe run=1 sent_ns",
            "probe run=1 sent_ns=1",
        ] {
            assert_eq!(parse_probe(&named(name)), None, "{name:?}");
        }
        let mut not_a_string = named("");
        not_a_string.fields.insert(PROBE_NAME_FIELD.to_owned(), Value::int(1));
        assert_eq!(parse_probe(&not_a_string), None);
        // One int field alone is not a probe, nor does it hide a probe name.
        let mut half = named(&probe_name(1, 2, 3));
        half.fields.insert(RUN_FIELD.to_owned(), Value::int(1));
        assert_eq!(parse_probe(&half), Some(Probe { run: 1, sent_ns: 2 }));
        assert_eq!(parse_probe(&Record::default()), None);
    }
}
