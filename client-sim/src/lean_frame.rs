//! The load simulator's lean receive path: reads from a binary `ServerFrame` only what a
//! load run accounts for, without building the frame's records.
//!
//! A fleet device needs of a `Changes` frame its partition key, range, page and snapshot
//! flags, and for each upserted record only whether it is a probe ([`crate::probe`]) and
//! which. [`LeanFrame::decode`] walks the protobuf bytes with `prost::encoding`'s helpers and
//! keeps exactly that: no record ids, field maps, strings or values are allocated, so a
//! frame costs one small `Vec` of probes instead of a few allocations per record. Every
//! other message (Welcome, SyncState, Error, ...) is rare and is decoded in full.
//!
//! It yields what a full decode followed by [`LeanFrame::from_frame`] yields, including
//! protobuf's merge rules (a message field repeated in one frame merges; of repeated map
//! keys the last entry counts), and fails where the full decode fails on framing, tags and
//! wire types; any failure is handed to the full decode, whose error is returned. It does
//! not check what it skips: UTF-8 of the strings it does not read (record ids, field names,
//! text of other fields), the values of fields other than the probe fields, and `links`.
//! The server never sends such frames.

use prost::{
    DecodeError, Message as _,
    encoding::{DecodeContext, WireType, check_wire_type, decode_key, decode_varint, skip_field},
};
use syncline_proto::v1::{Changes, ServerFrame, server_frame};

use crate::probe::{PROBE_NAME_FIELD, Probe, RUN_FIELD, SENT_NS_FIELD, int_probe, parse_probe, probe_in_name};

/// What a load run accounts for of a `Changes` frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeanChanges {
    /// The partition key.
    pub key: String,
    /// First sequence covered (0 on snapshot pages).
    pub from: u64,
    /// Last sequence covered (the snapshot's sequence on snapshot pages).
    pub to: u64,
    /// Catch-up page number; 0 for live pushes.
    pub page: u64,
    /// A snapshot page.
    pub snapshot: bool,
    /// The first snapshot page.
    pub reset: bool,
    /// The last snapshot page.
    pub snapshot_done: bool,
    /// The probes among the upserted records, in order (other records are left out).
    pub probes: Vec<Probe>,
}

impl LeanChanges {
    /// Returns what a load run accounts for of a decoded `Changes` frame.
    pub fn of(changes: &Changes) -> Self {
        Self {
            key: changes.key.clone(),
            from: changes.from,
            to: changes.to,
            page: changes.page,
            snapshot: changes.snapshot,
            reset: changes.reset,
            snapshot_done: changes.snapshot_done,
            probes: changes.upserts.iter().filter_map(parse_probe).collect(),
        }
    }
}

/// A server frame as the lean receive path sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum LeanFrame {
    /// A `Changes` frame, reduced to what a load run accounts for.
    Changes(LeanChanges),
    /// Any other message, decoded in full.
    Other(server_frame::Msg),
    /// A frame with no message.
    Empty,
}

impl LeanFrame {
    /// Reduces a fully decoded frame (e.g. one that came as JSON).
    pub fn from_frame(frame: ServerFrame) -> Self {
        match frame.msg {
            Some(server_frame::Msg::Changes(changes)) => Self::Changes(LeanChanges::of(&changes)),
            Some(other) => Self::Other(other),
            None => Self::Empty,
        }
    }

    /// Decodes a binary `ServerFrame`, building only what a load run accounts for of a
    /// `Changes` frame; any other frame is decoded in full.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match decode_changes_frame(bytes) {
            Ok(Some(changes)) => Ok(changes.map_or(Self::Empty, Self::Changes)),
            // Not a frame of Changes alone, or not well formed: the full decode decides.
            Ok(None) | Err(_) => ServerFrame::decode(bytes).map(Self::from_frame),
        }
    }
}

/// Field numbers and wire types of the messages walked here (`device.proto`, `common.proto`).
mod field {
    use prost::encoding::WireType::{self, LengthDelimited, SixtyFourBit, Varint};

    /// `ServerFrame.changes`; the other `msg` variants are 1 and 3 ..= 10.
    pub(super) const FRAME_CHANGES: u32 = 2;
    pub(super) const FRAME_LAST_VARIANT: u32 = 10;

    pub(super) const CHANGES_KEY: u32 = 2;
    pub(super) const CHANGES_FROM: u32 = 3;
    pub(super) const CHANGES_TO: u32 = 4;
    pub(super) const CHANGES_UPSERTS: u32 = 5;
    pub(super) const CHANGES_PAGE: u32 = 10;
    pub(super) const CHANGES_SNAPSHOT: u32 = 11;
    pub(super) const CHANGES_RESET: u32 = 12;
    pub(super) const CHANGES_SNAPSHOT_DONE: u32 = 13;

    /// Wire types of `Changes` fields 1 ..= 14 (source, key, from, to, upserts, deletes, total,
    /// remaining, links, page, snapshot, reset, snapshot_done, checksum).
    pub(super) const CHANGES_WIRE_TYPES: [WireType; 14] = [
        LengthDelimited,
        LengthDelimited,
        Varint,
        Varint,
        LengthDelimited,
        LengthDelimited,
        Varint,
        Varint,
        LengthDelimited,
        Varint,
        Varint,
        Varint,
        Varint,
        Varint,
    ];

    pub(super) const RECORD_FIELDS: u32 = 2;
    /// Wire types of `Record` fields 1 ..= 3 (id, fields, version).
    pub(super) const RECORD_WIRE_TYPES: [WireType; 3] = [LengthDelimited, LengthDelimited, Varint];

    /// A map entry: key 1, value 2.
    pub(super) const ENTRY_KEY: u32 = 1;
    pub(super) const ENTRY_VALUE: u32 = 2;

    pub(super) const VALUE_STRING: u32 = 1;
    pub(super) const VALUE_INT: u32 = 2;
    /// Wire types of `Value.kind` variants 1 ..= 7 (string, int, double, bool, bytes, null,
    /// blob).
    pub(super) const VALUE_WIRE_TYPES: [WireType; 7] =
        [LengthDelimited, Varint, SixtyFourBit, Varint, LengthDelimited, Varint, LengthDelimited];

    /// Returns the wire type of field `tag` in a message whose fields 1 ..= n have `types`
    /// (`None`: an unknown field, skipped whatever its wire type).
    pub(super) fn expected(types: &[WireType], tag: u32) -> Option<WireType> {
        let index = usize::try_from(tag).ok()?.checked_sub(1)?;
        types.get(index).copied()
    }
}

/// Walks a frame whose messages are all `Changes`: `Some(None)` for a frame with no message,
/// `Some(Some(changes))` for Changes, `None` when another message appears (so the full
/// decode applies the oneof's rules).
fn decode_changes_frame(mut buf: &[u8]) -> Result<Option<Option<LeanChanges>>, DecodeError> {
    let mut changes: Option<LeanChanges> = None;
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf)?;
        match tag {
            field::FRAME_CHANGES => {
                check_wire_type(WireType::LengthDelimited, wire_type)?;
                // A repeated Changes field merges into the one before, as protobuf's do.
                let changes = changes.get_or_insert_with(LeanChanges::default);
                merge_nested(changes, &mut buf, merge_changes_field)?;
            }
            1..=field::FRAME_LAST_VARIANT => return Ok(None),
            _ => skip(wire_type, tag, &mut buf)?,
        }
    }
    Ok(Some(changes))
}

fn merge_changes_field(changes: &mut LeanChanges, buf: &mut &[u8]) -> Result<(), DecodeError> {
    let (tag, wire_type) = decode_key(buf)?;
    if let Some(expected) = field::expected(&field::CHANGES_WIRE_TYPES, tag) {
        check_wire_type(expected, wire_type)?;
    }
    match tag {
        field::CHANGES_KEY => {
            prost::encoding::string::merge(wire_type, &mut changes.key, buf, DecodeContext::default())
        }
        field::CHANGES_FROM => decode_varint(buf).map(|from| changes.from = from),
        field::CHANGES_TO => decode_varint(buf).map(|to| changes.to = to),
        field::CHANGES_PAGE => decode_varint(buf).map(|page| changes.page = page),
        field::CHANGES_SNAPSHOT => decode_varint(buf).map(|flag| changes.snapshot = flag != 0),
        field::CHANGES_RESET => decode_varint(buf).map(|flag| changes.reset = flag != 0),
        field::CHANGES_SNAPSHOT_DONE => decode_varint(buf).map(|flag| changes.snapshot_done = flag != 0),
        field::CHANGES_UPSERTS => {
            let mut record = ProbeFields::default();
            merge_nested(&mut record, buf, merge_record_field)?;
            if let Some(probe) = record.probe()? {
                changes.probes.push(probe);
            }
            Ok(())
        }
        _ => skip(wire_type, tag, buf),
    }
}

/// A field value as far as probes care: only ints and strings can make one.
#[derive(Clone, Copy, Debug, Default)]
enum ProbeValue<'a> {
    /// Missing, or a value of another kind.
    #[default]
    Other,
    Int(i64),
    /// A string's UTF-8 bytes, not yet checked.
    Str(&'a [u8]),
}

/// The fields of one record that can make it a probe: each the value of the last map entry
/// with its name, as in the decoded map.
#[derive(Debug, Default)]
struct ProbeFields<'a> {
    run: ProbeValue<'a>,
    sent_ns: ProbeValue<'a>,
    name: ProbeValue<'a>,
}

impl ProbeFields<'_> {
    /// Returns the record's probe, as [`parse_probe`] reads it from the decoded record.
    fn probe(&self) -> Result<Option<Probe>, DecodeError> {
        let int = |value: ProbeValue<'_>| match value {
            ProbeValue::Int(number) => Some(number),
            ProbeValue::Other | ProbeValue::Str(_) => None,
        };
        if let Some(probe) = int_probe(int(self.run), int(self.sent_ns)) {
            return Ok(Some(probe));
        }
        let ProbeValue::Str(name) = self.name else { return Ok(None) };
        match std::str::from_utf8(name) {
            Ok(name) => Ok(probe_in_name(name)),
            // The full decode rejects the frame (and says where): hand it over.
            Err(_) => Err(invalid_utf8()),
        }
    }
}

/// Returns the error prost gives a string field that is not UTF-8 (without the path to the
/// field, which the full decode adds when [`LeanFrame::decode`] hands the frame over).
#[cold]
fn invalid_utf8() -> DecodeError {
    let mut text = String::new();
    let mut bytes: &[u8] = &[1, 0xff];
    prost::encoding::string::merge(WireType::LengthDelimited, &mut text, &mut bytes, DecodeContext::default())
        .expect_err("0xff is not UTF-8")
}

fn merge_record_field<'a>(record: &mut ProbeFields<'a>, buf: &mut &'a [u8]) -> Result<(), DecodeError> {
    let (tag, wire_type) = decode_key(buf)?;
    if let Some(expected) = field::expected(&field::RECORD_WIRE_TYPES, tag) {
        check_wire_type(expected, wire_type)?;
    }
    if tag != field::RECORD_FIELDS {
        return skip(wire_type, tag, buf);
    }
    let entry = length_delimited(buf)?;
    // The key comes first in every encoder's output: a value after a key that names no probe
    // field is skipped unread. If a key comes after such a value, the values are read again.
    let mut key: &[u8] = &[];
    let mut value = ProbeValue::Other;
    let mut skipped_value = false;
    walk(entry, |tag, wire_type, buf| {
        if matches!(tag, field::ENTRY_KEY | field::ENTRY_VALUE) {
            check_wire_type(WireType::LengthDelimited, wire_type)?;
        }
        match tag {
            field::ENTRY_KEY => key = length_delimited(buf)?,
            field::ENTRY_VALUE if probe_field(record, key).is_some() => {
                // A value repeated within the entry merges: its kind is the last one set.
                merge_nested(&mut value, buf, merge_value_field)?;
            }
            field::ENTRY_VALUE => {
                length_delimited(buf)?;
                skipped_value = true;
            }
            _ => return skip(wire_type, tag, buf),
        }
        Ok(())
    })?;
    let Some(slot) = probe_field(record, key) else { return Ok(()) };
    if skipped_value {
        value = ProbeValue::Other;
        walk(entry, |tag, wire_type, buf| match tag {
            field::ENTRY_VALUE => merge_nested(&mut value, buf, merge_value_field),
            _ => skip(wire_type, tag, buf),
        })?;
    }
    // Later entries with the same key replace earlier ones, as in the decoded map.
    *slot = value;
    Ok(())
}

/// Returns the slot of the probe field named `key`, if it names one.
fn probe_field<'r, 'a>(record: &'r mut ProbeFields<'a>, key: &[u8]) -> Option<&'r mut ProbeValue<'a>> {
    match key {
        key if key == RUN_FIELD.as_bytes() => Some(&mut record.run),
        key if key == SENT_NS_FIELD.as_bytes() => Some(&mut record.sent_ns),
        key if key == PROBE_NAME_FIELD.as_bytes() => Some(&mut record.name),
        _ => None,
    }
}

/// Calls `on_field` with the tag and wire type of each field of `message`, which it reads or
/// skips.
#[inline]
fn walk<'a>(
    mut message: &'a [u8],
    mut on_field: impl FnMut(u32, WireType, &mut &'a [u8]) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    while !message.is_empty() {
        let (tag, wire_type) = decode_key(&mut message)?;
        on_field(tag, wire_type, &mut message)?;
    }
    Ok(())
}

fn merge_value_field<'a>(value: &mut ProbeValue<'a>, buf: &mut &'a [u8]) -> Result<(), DecodeError> {
    let (tag, wire_type) = decode_key(buf)?;
    let Some(expected) = field::expected(&field::VALUE_WIRE_TYPES, tag) else {
        return skip(wire_type, tag, buf);
    };
    check_wire_type(expected, wire_type)?;
    *value = match tag {
        // int64: the varint's bits as two's complement, as prost reads it.
        field::VALUE_INT => ProbeValue::Int(decode_varint(buf)? as i64),
        field::VALUE_STRING => ProbeValue::Str(length_delimited(buf)?),
        _ => {
            skip(wire_type, tag, buf)?;
            ProbeValue::Other
        }
    };
    Ok(())
}

/// Walks the length-delimited message at the front of `buf` with `merge_field`, one field per
/// call, and moves past it. A field running past the message's end fails (as a
/// buffer underflow, where prost says the delimited length was exceeded: the full decode
/// reports it).
#[inline]
fn merge_nested<'a, T>(
    value: &mut T,
    buf: &mut &'a [u8],
    merge_field: impl Fn(&mut T, &mut &'a [u8]) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut message = length_delimited(buf)?;
    while !message.is_empty() {
        merge_field(value, &mut message)?;
    }
    Ok(())
}

/// Moves past a field of `wire_type` without reading it.
#[inline]
fn skip(wire_type: WireType, tag: u32, buf: &mut &[u8]) -> Result<(), DecodeError> {
    match wire_type {
        WireType::Varint => decode_varint(buf).map(drop),
        WireType::LengthDelimited => length_delimited(buf).map(drop),
        // Rare on this wire (doubles) or never sent (groups): prost's general skip.
        WireType::SixtyFourBit | WireType::ThirtyTwoBit | WireType::StartGroup | WireType::EndGroup => {
            skip_field(wire_type, tag, buf, DecodeContext::default())
        }
    }
}

/// Returns the contents of the length-delimited field at the front of `buf` and moves past it.
#[inline]
fn length_delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let len = decode_varint(buf)?;
    match usize::try_from(len).ok().filter(|&len| len <= buf.len()) {
        Some(len) => {
            let (contents, rest) = buf.split_at(len);
            *buf = rest;
            Ok(contents)
        }
        None => Err(buffer_underflow()),
    }
}

/// Returns prost's error for a length beyond the buffer (the full decode, which the caller
/// hands the frame to, reports it with the path to the field).
#[cold]
fn buffer_underflow() -> DecodeError {
    let mut past_the_end: &[u8] = &[1];
    skip_field(WireType::LengthDelimited, 1, &mut past_the_end, DecodeContext::default())
        .expect_err("a length of 1 with no byte after it")
}

#[cfg(test)]
mod tests;
