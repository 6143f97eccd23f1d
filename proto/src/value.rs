//! Conveniences for building typed field values.

use crate::v1::{NullValue, Value, value::Kind};

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
}
