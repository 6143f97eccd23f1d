//! The limits of a record (documented on `Record` in `common.proto`) and the one check of a
//! record against them, [`Record::validate`], which every path that writes records into a
//! partition runs: Ingest, change capture from channels, device mutations and the records
//! channels return for them.

use prost::Message as _;

use crate::v1::{Blob, Record, value::Kind};

/// Longest record id, in bytes: room for UUIDs, URLs and composite keys, while an id stays
/// small beside the record it names in every log entry and cursor.
pub const MAX_RECORD_ID_BYTES: usize = 512;

/// Longest field name, in bytes: far beyond any column or JSON property name in practice.
pub const MAX_FIELD_NAME_BYTES: usize = 256;

/// Most fields of one record: wide tables (a CRM account with hundreds of custom fields) fit,
/// while a record stays something a device can hold and diff field by field.
pub const MAX_RECORD_FIELDS: usize = 1_000;

/// Most encoded bytes of one record's id and fields (the `Record` message without its
/// version), 1 MB: as large as a document store's document (Firestore allows 1 MiB). A record
/// at the limit still fits one device frame of the default size (1 MiB) together with the
/// frame's other fields (a few hundred bytes: source, key, ids, counters), so any valid record
/// can be sent in a `Mutate` and delivered in one `Changes` frame. Larger content (files,
/// images) belongs in blob storage, referenced by a field.
pub const MAX_RECORD_BYTES: usize = 1_000_000;

/// Longest blob media type, in bytes (RFC 6838 allows 127 + 1 + 127).
pub const MAX_BLOB_MEDIA_TYPE_BYTES: usize = 255;

/// Longest blob file name, in bytes: room for any file system's names with a path.
pub const MAX_BLOB_NAME_BYTES: usize = 1_024;

/// Hex digits of a blob hash (SHA-256).
pub const BLOB_HASH_HEX_DIGITS: usize = 64;

/// Bytes of an over-long id or field name quoted in an error message.
const QUOTED_BYTES: usize = 64;

/// Why a record is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The id is empty or longer than [`MAX_RECORD_ID_BYTES`].
    #[error("invalid record id {id:?} ({bytes} bytes): ids are 1 to {MAX_RECORD_ID_BYTES} bytes")]
    InvalidId {
        /// The id, cut to its first 64 bytes.
        id: String,
        bytes: usize,
    },
    /// A field name is empty.
    #[error("record {id:?} has a field with an empty name")]
    EmptyFieldName { id: String },
    /// A field name is longer than [`MAX_FIELD_NAME_BYTES`].
    #[error("record {id:?}: field name {field:?} has {bytes} bytes, more than {MAX_FIELD_NAME_BYTES}")]
    FieldNameTooLong {
        id: String,
        /// The name, cut to its first 64 bytes.
        field: String,
        bytes: usize,
    },
    /// A field's `Value` has none of its kinds set.
    #[error("record {id:?}: field {field:?} has no value (set one kind; nullValue for a null)")]
    ValueWithoutKind { id: String, field: String },
    /// The record has more than [`MAX_RECORD_FIELDS`] fields.
    #[error("record {id:?} has {fields} fields, more than {MAX_RECORD_FIELDS}")]
    TooManyFields { id: String, fields: usize },
    /// The record's id and fields encode to more than [`MAX_RECORD_BYTES`].
    #[error("record {id:?} encodes to {bytes} bytes, more than {MAX_RECORD_BYTES}")]
    TooLarge { id: String, bytes: usize },
    /// A field's blob reference is malformed.
    #[error("record {id:?}: field {field:?} is not a valid blob reference: {reason}")]
    InvalidBlob { id: String, field: String, reason: BlobError },
}

/// Why a blob reference is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// The hash is not 64 lowercase hex digits.
    #[error("the hash must be a SHA-256 as {BLOB_HASH_HEX_DIGITS} lowercase hex digits")]
    InvalidHash,
    /// The media type is empty or longer than [`MAX_BLOB_MEDIA_TYPE_BYTES`].
    #[error("the media type must be 1 to {MAX_BLOB_MEDIA_TYPE_BYTES} bytes")]
    InvalidMediaType,
    /// The name is longer than [`MAX_BLOB_NAME_BYTES`].
    #[error("the name is longer than {MAX_BLOB_NAME_BYTES} bytes")]
    NameTooLong,
}

/// Returns true when `hash` is a blob hash: 64 lowercase hex digits.
pub fn is_blob_hash(hash: &str) -> bool {
    hash.len() == BLOB_HASH_HEX_DIGITS && hash.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
}

impl Blob {
    /// Checks the reference's form: its hash, media type and name (the size against a
    /// server's limit is the server's check).
    pub fn validate(&self) -> Result<(), BlobError> {
        if !is_blob_hash(&self.hash) {
            return Err(BlobError::InvalidHash);
        }
        if self.media_type.is_empty() || self.media_type.len() > MAX_BLOB_MEDIA_TYPE_BYTES {
            return Err(BlobError::InvalidMediaType);
        }
        if self.name.len() > MAX_BLOB_NAME_BYTES {
            return Err(BlobError::NameTooLong);
        }
        Ok(())
    }
}

impl Record {
    /// Returns the blobs the record's fields reference, by field name.
    pub fn blobs(&self) -> impl Iterator<Item = (&str, &Blob)> {
        self.fields.iter().filter_map(|(field, value)| match &value.kind {
            Some(Kind::BlobValue(blob)) => Some((field.as_str(), blob)),
            _ => None,
        })
    }
}

impl RecordError {
    /// Returns the record id the error is about (cut for an over-long one).
    pub fn id(&self) -> &str {
        match self {
            RecordError::InvalidId { id, .. }
            | RecordError::EmptyFieldName { id }
            | RecordError::FieldNameTooLong { id, .. }
            | RecordError::ValueWithoutKind { id, .. }
            | RecordError::TooManyFields { id, .. }
            | RecordError::TooLarge { id, .. }
            | RecordError::InvalidBlob { id, .. } => id,
        }
    }
}

/// Checks a record id (of an upsert or a delete): 1 to [`MAX_RECORD_ID_BYTES`] bytes.
pub fn validate_record_id(id: &str) -> Result<(), RecordError> {
    if id.is_empty() || id.len() > MAX_RECORD_ID_BYTES {
        return Err(RecordError::InvalidId { id: quoted(id), bytes: id.len() });
    }
    Ok(())
}

impl Record {
    /// Checks the record against the limits of this module: its id, its field count, each
    /// field name (non-empty, at most [`MAX_FIELD_NAME_BYTES`]) and value (a kind is set), and
    /// its encoded size ([`Record::content_bytes`]). The version is not checked: the server
    /// sets it.
    pub fn validate(&self) -> Result<(), RecordError> {
        validate_record_id(&self.id)?;
        let id = || self.id.clone();
        if self.fields.len() > MAX_RECORD_FIELDS {
            return Err(RecordError::TooManyFields { id: id(), fields: self.fields.len() });
        }
        for (field, value) in &self.fields {
            if field.is_empty() {
                return Err(RecordError::EmptyFieldName { id: id() });
            }
            if field.len() > MAX_FIELD_NAME_BYTES {
                return Err(RecordError::FieldNameTooLong { id: id(), field: quoted(field), bytes: field.len() });
            }
            match &value.kind {
                None => return Err(RecordError::ValueWithoutKind { id: id(), field: field.clone() }),
                Some(Kind::BlobValue(blob)) => {
                    if let Err(reason) = blob.validate() {
                        return Err(RecordError::InvalidBlob { id: id(), field: field.clone(), reason });
                    }
                }
                Some(_) => {}
            }
        }
        let bytes = self.content_bytes();
        if bytes > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge { id: id(), bytes });
        }
        Ok(())
    }

    /// Returns the encoded size of the record's id and fields: its encoding without the
    /// version, which the server assigns (and which adds at most 11 bytes).
    pub fn content_bytes(&self) -> usize {
        let version_bytes = match self.version {
            0 => 0,
            version => 1 + prost::encoding::encoded_len_varint(version),
        };
        self.encoded_len() - version_bytes
    }
}

/// Returns `text` cut to at most [`QUOTED_BYTES`] bytes (on a character boundary), for error
/// messages about over-long names.
fn quoted(text: &str) -> String {
    if text.len() <= QUOTED_BYTES {
        return text.to_owned();
    }
    let mut end = QUOTED_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::v1::{Blob, Value};

    fn record(id: &str, fields: &[(&str, Value)]) -> Record {
        let fields: BTreeMap<String, Value> =
            fields.iter().map(|(name, value)| ((*name).to_owned(), value.clone())).collect();
        Record { id: id.to_owned(), fields, version: 0 }
    }

    #[test]
    fn a_record_within_every_limit_is_valid() {
        assert_eq!(record("a", &[("name", Value::string("Ada")), ("n", Value::null())]).validate(), Ok(()));
        assert_eq!(record(&"i".repeat(MAX_RECORD_ID_BYTES), &[]).validate(), Ok(()), "the longest id");
        let longest_name = "f".repeat(MAX_FIELD_NAME_BYTES);
        assert_eq!(record("a", &[(&longest_name, Value::int(1))]).validate(), Ok(()), "the longest name");
    }

    #[test]
    fn ids_are_one_to_512_bytes() {
        let error = record("", &[]).validate().unwrap_err();
        assert_eq!(error, RecordError::InvalidId { id: String::new(), bytes: 0 });
        let long = "x".repeat(MAX_RECORD_ID_BYTES + 1);
        let error = record(&long, &[]).validate().unwrap_err();
        assert_eq!(error, RecordError::InvalidId { id: format!("{}...", &long[..QUOTED_BYTES]), bytes: long.len() });
        assert!(error.to_string().contains("513 bytes"), "{error}");
        assert_eq!(validate_record_id("ok"), Ok(()));
    }

    #[test]
    fn field_names_are_non_empty_and_bounded() {
        let error = record("r1", &[("", Value::int(1))]).validate().unwrap_err();
        assert_eq!(error, RecordError::EmptyFieldName { id: "r1".into() });
        assert!(error.to_string().contains("\"r1\"") && error.to_string().contains("empty name"), "{error}");
        let long = "é".repeat(MAX_FIELD_NAME_BYTES); // two bytes each
        let error = record("r1", &[(&long, Value::int(1))]).validate().unwrap_err();
        let RecordError::FieldNameTooLong { field, bytes, .. } = &error else { panic!("{error:?}") };
        assert_eq!((field.as_str(), *bytes), (format!("{}...", "é".repeat(32)).as_str(), 2 * MAX_FIELD_NAME_BYTES));
    }

    #[test]
    fn a_value_without_a_kind_is_refused() {
        let error = record("r1", &[("ok", Value::bool(true)), ("hole", Value { kind: None })]).validate().unwrap_err();
        assert_eq!(error, RecordError::ValueWithoutKind { id: "r1".into(), field: "hole".into() });
        assert!(error.to_string().contains("\"hole\""), "{error}");
    }

    #[test]
    fn blob_references_are_checked() {
        let blob = Blob { hash: "0f".repeat(32), size: 10, media_type: "image/png".into(), name: String::new() };
        assert_eq!(record("r1", &[("photo", Value::blob(blob.clone()))]).validate(), Ok(()));
        let refused = |blob: Blob| match record("r1", &[("photo", Value::blob(blob))]).validate() {
            Err(RecordError::InvalidBlob { field, reason, .. }) if field == "photo" => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(refused(Blob { hash: "0F".repeat(32), ..blob.clone() }), BlobError::InvalidHash, "uppercase");
        assert_eq!(refused(Blob { hash: "0f".repeat(31), ..blob.clone() }), BlobError::InvalidHash, "short");
        assert_eq!(refused(Blob { hash: format!("{}zz", "0f".repeat(31)), ..blob.clone() }), BlobError::InvalidHash);
        assert_eq!(refused(Blob { media_type: String::new(), ..blob.clone() }), BlobError::InvalidMediaType);
        assert_eq!(refused(Blob { media_type: "x".repeat(256), ..blob.clone() }), BlobError::InvalidMediaType);
        assert_eq!(refused(Blob { name: "n".repeat(1025), ..blob.clone() }), BlobError::NameTooLong);
        let with_blob = record("r1", &[("photo", Value::blob(blob.clone())), ("n", Value::int(1))]);
        assert_eq!(with_blob.blobs().collect::<Vec<_>>(), vec![("photo", &blob)]);
    }

    #[test]
    fn field_count_is_bounded() {
        let fields = |count: usize| (0..count).map(|n| (format!("f{n}"), Value::int(1))).collect::<BTreeMap<_, _>>();
        let at_limit = Record { id: "r".into(), fields: fields(MAX_RECORD_FIELDS), version: 0 };
        assert_eq!(at_limit.validate(), Ok(()));
        let over = Record { id: "r".into(), fields: fields(MAX_RECORD_FIELDS + 1), version: 0 };
        assert_eq!(over.validate(), Err(RecordError::TooManyFields { id: "r".into(), fields: MAX_RECORD_FIELDS + 1 }));
    }

    #[test]
    fn encoded_size_is_bounded_without_the_version() {
        let with_payload = |len: usize| record("r", &[("blob", Value::bytes(vec![7; len]))]);
        let mut len = MAX_RECORD_BYTES - 64;
        while with_payload(len + 1).content_bytes() <= MAX_RECORD_BYTES {
            len += 1;
        }
        let largest = with_payload(len);
        assert_eq!(largest.content_bytes(), MAX_RECORD_BYTES, "one byte more of payload is one byte more encoded");
        assert_eq!(largest.validate(), Ok(()));
        let versioned = Record { version: u64::MAX, ..largest.clone() };
        assert_eq!(versioned.content_bytes(), MAX_RECORD_BYTES, "the version the server sets does not count");
        assert_eq!(versioned.validate(), Ok(()));
        let error = with_payload(len + 1).validate().unwrap_err();
        assert_eq!(error, RecordError::TooLarge { id: "r".into(), bytes: MAX_RECORD_BYTES + 1 });
        assert_eq!(error.id(), "r");
    }
}
