//! Conveniences for building typed field values, and the canonical JSON mapping of `Value`.
//!
//! pbjson generates the JSON mapping of every other message, but writes a non-finite
//! `double_value` as `null`, which loses it; so `Value` is left out of its generation
//! (`build.rs`) and mapped here, following protobuf's canonical JSON mapping:
//!
//! | kind          | written as                                  | also read from                       |
//! |---------------|---------------------------------------------|--------------------------------------|
//! | `stringValue` | a string                                    |                                      |
//! | `intValue`    | a decimal string (int64)                    | a number; an integral float or exponent form (`"1e3"`) |
//! | `doubleValue` | a number, or `"NaN"`, `"Infinity"`, `"-Infinity"` | a numeric string (`"1.5"`)     |
//! | `boolValue`   | `true` or `false`                           |                                      |
//! | `bytesValue`  | standard base64 with padding                | URL-safe base64, padding optional    |
//! | `nullValue`   | `"NULL_VALUE"`                              | `0`, or `null` (as `google.protobuf.NullValue`) |
//! | `blobValue`   | `{"hash", "size", "mediaType", "name"}` (`Blob`'s canonical JSON: size a decimal string, empty members left out) | a number for `size`; proto field names |
//!
//! A member given as `null` (other than `nullValue`) is absent, as for any canonical field;
//! two members set is an error, and so is any other value (e.g. `"intValue": "12abc"`, a
//! fraction for `intValue`, an out-of-range number, `"doubleValue": "inf"`). Unknown members
//! are ignored, as for the generated messages.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Unexpected, Visitor};
use serde::ser::{SerializeStruct as _, Serializer};

use crate::v1::{Blob, NullValue, Value, value::Kind};

impl Value {
    /// Returns a string value.
    pub fn string(text: impl Into<String>) -> Self {
        Self { kind: Some(Kind::StringValue(text.into())) }
    }

    /// Returns an integer value.
    pub fn int(number: i64) -> Self {
        Self { kind: Some(Kind::IntValue(number)) }
    }

    /// Returns a floating-point value.
    pub fn double(number: f64) -> Self {
        Self { kind: Some(Kind::DoubleValue(number)) }
    }

    /// Returns a boolean value.
    pub fn bool(flag: bool) -> Self {
        Self { kind: Some(Kind::BoolValue(flag)) }
    }

    /// Returns a bytes value.
    pub fn bytes(data: impl Into<Vec<u8>>) -> Self {
        Self { kind: Some(Kind::BytesValue(data.into())) }
    }

    /// Returns an explicit null.
    pub fn null() -> Self {
        Self { kind: Some(Kind::NullValue(NullValue::NullValue as i32)) }
    }

    /// Returns a blob reference.
    pub fn blob(blob: Blob) -> Self {
        Self { kind: Some(Kind::BlobValue(blob)) }
    }

    /// Returns the blob this value references, if it is one.
    pub fn as_blob(&self) -> Option<&Blob> {
        match &self.kind {
            Some(Kind::BlobValue(blob)) => Some(blob),
            _ => None,
        }
    }
}

/// The JSON names of `Value`'s members, as written.
const MEMBERS: &[&str] =
    &["stringValue", "intValue", "doubleValue", "boolValue", "bytesValue", "nullValue", "blobValue"];

/// The canonical JSON names of the non-finite doubles.
const NAN: &str = "NaN";
const INFINITY: &str = "Infinity";
const NEGATIVE_INFINITY: &str = "-Infinity";

/// Reads base64 with or without padding (canonical decoders accept both).
const PADDING_OPTIONAL: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_BASE64: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, PADDING_OPTIONAL);
const URL_SAFE_BASE64: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, PADDING_OPTIONAL);

impl serde::Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut json = serializer.serialize_struct("syncline.v1.Value", usize::from(self.kind.is_some()))?;
        match &self.kind {
            None => {}
            Some(Kind::StringValue(text)) => json.serialize_field("stringValue", text)?,
            Some(Kind::IntValue(number)) => json.serialize_field("intValue", &number.to_string())?,
            Some(Kind::DoubleValue(number)) if number.is_nan() => json.serialize_field("doubleValue", NAN)?,
            Some(Kind::DoubleValue(number)) if *number == f64::INFINITY => {
                json.serialize_field("doubleValue", INFINITY)?;
            }
            Some(Kind::DoubleValue(number)) if *number == f64::NEG_INFINITY => {
                json.serialize_field("doubleValue", NEGATIVE_INFINITY)?;
            }
            Some(Kind::DoubleValue(number)) => json.serialize_field("doubleValue", number)?,
            Some(Kind::BoolValue(flag)) => json.serialize_field("boolValue", flag)?,
            Some(Kind::BytesValue(data)) => {
                json.serialize_field("bytesValue", &base64::engine::general_purpose::STANDARD.encode(data))?;
            }
            // An enum value this version does not know is written as its number, as
            // canonical encoders do.
            Some(Kind::NullValue(number)) => match NullValue::try_from(*number) {
                Ok(null) => json.serialize_field("nullValue", null.as_str_name())?,
                Err(_) => json.serialize_field("nullValue", number)?,
            },
            Some(Kind::BlobValue(blob)) => json.serialize_field("blobValue", blob)?,
        }
        json.end()
    }
}

impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("syncline.v1.Value", MEMBERS, ValueVisitor)
    }
}

/// A member name of `Value` in JSON: its JSON name or its proto field name.
enum Member {
    String,
    Int,
    Double,
    Bool,
    Bytes,
    Null,
    Blob,
    Unknown,
}

impl<'de> serde::Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MemberVisitor;

        impl Visitor<'_> for MemberVisitor {
            type Value = Member;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, "a member of syncline.v1.Value: one of {MEMBERS:?}")
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<Member, E> {
                Ok(match name {
                    "stringValue" | "string_value" => Member::String,
                    "intValue" | "int_value" => Member::Int,
                    "doubleValue" | "double_value" => Member::Double,
                    "boolValue" | "bool_value" => Member::Bool,
                    "bytesValue" | "bytes_value" => Member::Bytes,
                    "nullValue" | "null_value" => Member::Null,
                    "blobValue" | "blob_value" => Member::Blob,
                    _ => Member::Unknown,
                })
            }
        }

        deserializer.deserialize_identifier(MemberVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a syncline.v1.Value object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kind: Option<Kind> = None;
        while let Some(member) = map.next_key::<Member>()? {
            let read = match member {
                Member::String => map.next_value::<Option<String>>()?.map(Kind::StringValue),
                Member::Int => map.next_value::<Option<JsonInt>>()?.map(|number| Kind::IntValue(number.0)),
                Member::Double => map.next_value::<Option<JsonDouble>>()?.map(|number| Kind::DoubleValue(number.0)),
                Member::Bool => map.next_value::<Option<bool>>()?.map(Kind::BoolValue),
                Member::Bytes => map.next_value::<Option<JsonBytes>>()?.map(|data| Kind::BytesValue(data.0)),
                Member::Null => Some(Kind::NullValue(map.next_value::<JsonNull>()?.0)),
                Member::Blob => map.next_value::<Option<Blob>>()?.map(Kind::BlobValue),
                Member::Unknown => {
                    map.next_value::<IgnoredAny>()?;
                    None
                }
            };
            if let Some(read) = read {
                if kind.is_some() {
                    return Err(de::Error::custom("a syncline.v1.Value has more than one kind set"));
                }
                kind = Some(read);
            }
        }
        Ok(Value { kind })
    }
}

/// An int64 in JSON: a decimal string (as written), a number, or either in exponent or
/// decimal-point form when the value is integral (e.g. `1e3`, `"2.0"`).
struct JsonInt(i64);

impl<'de> serde::Deserialize<'de> for JsonInt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IntVisitor;

        impl Visitor<'_> for IntVisitor {
            type Value = JsonInt;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("an int64 as a JSON number or a decimal string")
            }

            fn visit_i64<E: de::Error>(self, number: i64) -> Result<JsonInt, E> {
                Ok(JsonInt(number))
            }

            fn visit_u64<E: de::Error>(self, number: u64) -> Result<JsonInt, E> {
                i64::try_from(number).map(JsonInt).map_err(|_| E::invalid_value(Unexpected::Unsigned(number), &self))
            }

            fn visit_f64<E: de::Error>(self, number: f64) -> Result<JsonInt, E> {
                integral_i64(number).map(JsonInt).ok_or_else(|| E::invalid_value(Unexpected::Float(number), &self))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<JsonInt, E> {
                text.parse::<i64>()
                    .ok()
                    .or_else(|| text.parse::<f64>().ok().and_then(integral_i64))
                    .map(JsonInt)
                    .ok_or_else(|| E::invalid_value(Unexpected::Str(text), &self))
            }
        }

        deserializer.deserialize_any(IntVisitor)
    }
}

/// Returns `number` as an i64 when it is integral and in range.
fn integral_i64(number: f64) -> Option<i64> {
    // -2^63 is exactly representable; 2^63 is the first value past i64::MAX.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (number.fract() == 0.0 && (-LIMIT..LIMIT).contains(&number)).then_some(number as i64)
}

/// A double in JSON: a number, `"NaN"`, `"Infinity"`, `"-Infinity"`, or a numeric string.
struct JsonDouble(f64);

impl<'de> serde::Deserialize<'de> for JsonDouble {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DoubleVisitor;

        impl Visitor<'_> for DoubleVisitor {
            type Value = JsonDouble;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter
                    .write_str("a double as a JSON number, a numeric string, \"NaN\", \"Infinity\" or \"-Infinity\"")
            }

            fn visit_f64<E: de::Error>(self, number: f64) -> Result<JsonDouble, E> {
                Ok(JsonDouble(number))
            }

            fn visit_i64<E: de::Error>(self, number: i64) -> Result<JsonDouble, E> {
                Ok(JsonDouble(number as f64))
            }

            fn visit_u64<E: de::Error>(self, number: u64) -> Result<JsonDouble, E> {
                Ok(JsonDouble(number as f64))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<JsonDouble, E> {
                match text {
                    NAN => Ok(JsonDouble(f64::NAN)),
                    INFINITY => Ok(JsonDouble(f64::INFINITY)),
                    NEGATIVE_INFINITY => Ok(JsonDouble(f64::NEG_INFINITY)),
                    // Rust also reads "inf", "nan" and overflowing numbers ("1e999") as
                    // non-finite; the canonical mapping names those only as above.
                    _ => text
                        .parse::<f64>()
                        .ok()
                        .filter(|number| number.is_finite())
                        .map(JsonDouble)
                        .ok_or_else(|| E::invalid_value(Unexpected::Str(text), &self)),
                }
            }
        }

        deserializer.deserialize_any(DoubleVisitor)
    }
}

/// Bytes in JSON: base64, standard or URL-safe, padded or not.
struct JsonBytes(Vec<u8>);

impl<'de> serde::Deserialize<'de> for JsonBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;

        impl Visitor<'_> for BytesVisitor {
            type Value = JsonBytes;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("bytes as a base64 string")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<JsonBytes, E> {
                STANDARD_BASE64
                    .decode(text)
                    .or_else(|_| URL_SAFE_BASE64.decode(text))
                    .map(JsonBytes)
                    .map_err(|_| E::invalid_value(Unexpected::Str(text), &self))
            }
        }

        deserializer.deserialize_str(BytesVisitor)
    }
}

/// The null value in JSON: `"NULL_VALUE"`, `0`, or `null`.
struct JsonNull(i32);

impl<'de> serde::Deserialize<'de> for JsonNull {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NullVisitor;

        impl Visitor<'_> for NullVisitor {
            type Value = JsonNull;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("\"NULL_VALUE\", its number (0) or null")
            }

            fn visit_unit<E: de::Error>(self) -> Result<JsonNull, E> {
                Ok(JsonNull(NullValue::NullValue as i32))
            }

            fn visit_none<E: de::Error>(self) -> Result<JsonNull, E> {
                self.visit_unit()
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<JsonNull, E> {
                NullValue::from_str_name(text)
                    .map(|null| JsonNull(null as i32))
                    .ok_or_else(|| E::invalid_value(Unexpected::Str(text), &self))
            }

            // Any enum number is kept, as for the generated enums (proto3 enums are open).
            fn visit_i64<E: de::Error>(self, number: i64) -> Result<JsonNull, E> {
                i32::try_from(number).map(JsonNull).map_err(|_| E::invalid_value(Unexpected::Signed(number), &self))
            }

            fn visit_u64<E: de::Error>(self, number: u64) -> Result<JsonNull, E> {
                i64::try_from(number)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(number), &self))
                    .and_then(|number| self.visit_i64(number))
            }
        }

        deserializer.deserialize_any(NullVisitor)
    }
}

#[cfg(test)]
mod tests;
