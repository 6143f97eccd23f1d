//! Typed field values ⇄ SQLite values, following each field's declared type.
//!
//! Values written through the channel are checked strictly (an int is not a double, a string
//! is not bytes). Values read back are converted by the column's declared type, leniently
//! where nothing is lost, because other processes may write the file with looser types.

use rusqlite::Row;
use rusqlite::types::{Value as SqlValue, ValueRef};
use syncline_proto::sdk::ChannelError;
use syncline_proto::v1::value::Kind;
use syncline_proto::v1::{Record, Value};

use crate::schema::{FieldDef, FieldType, SourceSchema};

/// Returns the SQLite value storing `value` in `field`, or why it does not fit.
pub(crate) fn to_sql(source: &SourceSchema, field: &FieldDef, value: &Value) -> Result<SqlValue, ChannelError> {
    let mismatch = |given: &str| {
        ChannelError::InvalidArgument(format!(
            "{}.{} holds {} values, got {given}",
            source.name,
            field.name,
            field.ty.wire_name()
        ))
    };
    let Some(kind) = &value.kind else {
        return Err(ChannelError::InvalidArgument(format!("{}.{} has a value with no kind", source.name, field.name)));
    };
    match (field.ty, kind) {
        (_, Kind::NullValue(_)) if field.required => {
            Err(ChannelError::InvalidArgument(format!("{}.{} is required and cannot be null", source.name, field.name)))
        }
        (_, Kind::NullValue(_)) => Ok(SqlValue::Null),
        (FieldType::String, Kind::StringValue(text)) => Ok(SqlValue::Text(text.clone())),
        (FieldType::Int, Kind::IntValue(number)) => Ok(SqlValue::Integer(*number)),
        (FieldType::Double, Kind::DoubleValue(number)) => Ok(SqlValue::Real(*number)),
        (FieldType::Bool, Kind::BoolValue(flag)) => Ok(SqlValue::Integer(i64::from(*flag))),
        (FieldType::Bytes, Kind::BytesValue(data)) => Ok(SqlValue::Blob(data.clone())),
        (_, Kind::StringValue(_)) => Err(mismatch("a string")),
        (_, Kind::IntValue(_)) => Err(mismatch("an int")),
        (_, Kind::DoubleValue(_)) => Err(mismatch("a double")),
        (_, Kind::BoolValue(_)) => Err(mismatch("a bool")),
        (_, Kind::BytesValue(_)) => Err(mismatch("bytes")),
        (_, Kind::BlobValue(_)) => Err(mismatch("a blob")),
    }
}

/// Returns the typed value of `field` read from the database.
fn from_sql(source: &SourceSchema, field: &FieldDef, stored: ValueRef<'_>) -> Result<Value, ChannelError> {
    let corrupt = || {
        ChannelError::Internal(format!(
            "{}.{} holds a {:?} that is not a {}",
            source.name,
            field.name,
            stored.data_type(),
            field.ty.wire_name()
        ))
    };
    Ok(match (field.ty, stored) {
        (_, ValueRef::Null) => Value::null(),
        (FieldType::String, ValueRef::Text(text)) => Value::string(std::str::from_utf8(text).map_err(|_| corrupt())?),
        (FieldType::Int, ValueRef::Integer(number)) => Value::int(number),
        (FieldType::Double, ValueRef::Real(number)) => Value::double(number),
        // REAL affinity stores whole numbers as integers on disk.
        #[allow(clippy::cast_precision_loss)]
        (FieldType::Double, ValueRef::Integer(number)) => Value::double(number as f64),
        (FieldType::Bool, ValueRef::Integer(number @ (0 | 1))) => Value::bool(number == 1),
        (FieldType::Bytes, ValueRef::Blob(data) | ValueRef::Text(data)) => Value::bytes(data),
        (FieldType::String | FieldType::Int | FieldType::Double | FieldType::Bool | FieldType::Bytes, _) => {
            return Err(corrupt());
        }
    })
}

/// Reads a record from a row selected with [`SourceSchema::record_columns`].
pub(crate) fn record_from_row(source: &SourceSchema, row: &Row<'_>) -> Result<Record, ChannelError> {
    let id: String = row.get(0).map_err(crate::db::sqlite_error)?;
    let version: i64 = row.get(1).map_err(crate::db::sqlite_error)?;
    let mut record = Record { id, version: u64::try_from(version).unwrap_or(0), ..Record::default() };
    for (index, field) in source.fields.iter().enumerate() {
        let stored = row.get_ref(index + 2).map_err(crate::db::sqlite_error)?;
        record.fields.insert(field.name.to_owned(), from_sql(source, field, stored)?);
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ACCOUNT;

    #[test]
    fn values_round_trip_through_their_declared_columns() {
        let cases = [
            ("name", Value::string("Acme")),
            ("employees", Value::int(-42)),
            ("annual_revenue", Value::double(1.5e9)),
            ("active", Value::bool(true)),
            ("active", Value::bool(false)),
            ("logo", Value::bytes(vec![0, 159, 146, 150])),
            ("industry", Value::null()),
        ];
        for (name, value) in cases {
            let field = ACCOUNT.field(name).expect("field");
            let stored = to_sql(&ACCOUNT, field, &value).expect("fits");
            assert_eq!(from_sql(&ACCOUNT, field, ValueRef::from(&stored)).expect("reads"), value, "{name}");
        }
    }

    #[test]
    fn a_value_of_the_wrong_type_or_a_null_required_field_is_refused() {
        let employees = ACCOUNT.field("employees").expect("field");
        assert!(matches!(to_sql(&ACCOUNT, employees, &Value::double(1.0)), Err(ChannelError::InvalidArgument(_))));
        assert!(matches!(to_sql(&ACCOUNT, employees, &Value::string("1")), Err(ChannelError::InvalidArgument(_))));
        assert!(matches!(to_sql(&ACCOUNT, employees, &Value { kind: None }), Err(ChannelError::InvalidArgument(_))));
        let name = ACCOUNT.field("name").expect("field");
        assert!(matches!(to_sql(&ACCOUNT, name, &Value::null()), Err(ChannelError::InvalidArgument(_))));
    }

    #[test]
    fn loosely_typed_values_written_by_others_are_read_by_the_column_type() {
        let revenue = ACCOUNT.field("annual_revenue").expect("field");
        assert_eq!(from_sql(&ACCOUNT, revenue, ValueRef::Integer(3)).expect("reads"), Value::double(3.0));
        let active = ACCOUNT.field("active").expect("field");
        assert!(matches!(from_sql(&ACCOUNT, active, ValueRef::Integer(7)), Err(ChannelError::Internal(_))));
        let name = ACCOUNT.field("name").expect("field");
        assert!(matches!(from_sql(&ACCOUNT, name, ValueRef::Integer(7)), Err(ChannelError::Internal(_))));
    }
}
