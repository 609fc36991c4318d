//! Typed column builders: each column learns its type from its first
//! non-null value (or its declaration) and then accepts only values that fit.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, TimeUnit};

use super::temporal::{self, Temporal};

/// The column types lucca-sync produces (DuckDB names in the docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// BIGINT.
    Int64,
    /// DOUBLE.
    Float64,
    /// BOOLEAN.
    Boolean,
    /// VARCHAR.
    Utf8,
    /// DATE.
    Date,
    /// TIMESTAMP (naive, as Lucca sends it).
    Timestamp,
    /// TIMESTAMPTZ (stored as UTC).
    TimestampTz,
    /// JSON text in a VARCHAR column (arrays, objects past the flattening depth).
    Json,
    /// DECIMAL(precision, scale), exact.
    Decimal(u8, u8),
}

impl ColumnType {
    /// The column type written as `data_type`, if lucca-sync writes it.
    pub fn of_arrow(data_type: &DataType) -> Option<ColumnType> {
        Some(match data_type {
            DataType::Int64 => ColumnType::Int64,
            DataType::Float64 => ColumnType::Float64,
            DataType::Boolean => ColumnType::Boolean,
            DataType::Utf8 => ColumnType::Utf8,
            DataType::Date32 => ColumnType::Date,
            DataType::Timestamp(TimeUnit::Microsecond, None) => ColumnType::Timestamp,
            DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => ColumnType::TimestampTz,
            DataType::Decimal128(precision, scale) => {
                ColumnType::Decimal(*precision, u8::try_from(*scale).ok()?)
            }
            _ => return None,
        })
    }

    /// The Arrow type of the column.
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Utf8 | ColumnType::Json => DataType::Utf8,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnType::TimestampTz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")))
            }
            ColumnType::Decimal(precision, scale) => {
                DataType::Decimal128(precision, i8::try_from(scale).unwrap_or(i8::MAX))
            }
        }
    }
}

/// One JSON scalar, borrowed from the page body where possible.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// An integer past i64, as written: its digits are kept (a float
    /// would round them).
    BigInt(&'a str),
    /// Any other number.
    Float(f64),
    /// A string.
    Str(std::borrow::Cow<'a, str>),
    /// An array or object kept as JSON text.
    Json(&'a str),
}

impl Scalar<'_> {
    /// How the value is shown in an error message.
    pub fn shown(&self) -> String {
        match self {
            Scalar::Null => "null".into(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::BigInt(digits) => (*digits).to_owned(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Str(s) => format!("{:?}", truncate(s, 80)),
            Scalar::Json(j) => truncate(j, 80).to_owned(),
        }
    }

    /// The type a column gets when this is its first non-null value.
    pub fn inferred_type(&self) -> Option<ColumnType> {
        Some(match self {
            Scalar::Null => return None,
            Scalar::Bool(_) => ColumnType::Boolean,
            Scalar::Int(_) => ColumnType::Int64,
            // VARCHAR of the exact digits, not a rounding DOUBLE.
            Scalar::BigInt(_) => ColumnType::Utf8,
            Scalar::Float(_) => ColumnType::Float64,
            Scalar::Json(_) => ColumnType::Json,
            Scalar::Str(s) => match temporal::parse(s) {
                Some(Temporal::Date(_)) => ColumnType::Date,
                Some(Temporal::Naive(_)) => ColumnType::Timestamp,
                Some(Temporal::Zoned(_)) => ColumnType::TimestampTz,
                None => ColumnType::Utf8,
            },
        })
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A column being filled for the current batch.
#[derive(Debug)]
pub enum ColumnBuilder {
    /// No non-null value seen yet: only nulls, counted.
    Pending(usize),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
    Utf8(StringBuilder),
    Json(StringBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    TimestampTz(TimestampMicrosecondBuilder),
    /// Values scaled by 10^scale.
    Decimal(Decimal128Builder, u8, u8),
}

impl ColumnBuilder {
    /// An empty builder for a column of a known type.
    pub fn typed(ty: ColumnType) -> Self {
        Self::with_capacity(ty, 0, 0)
    }

    /// An empty builder with room for `rows` values (and `text_bytes` of
    /// text for a text column).
    fn with_capacity(ty: ColumnType, rows: usize, text_bytes: usize) -> Self {
        match ty {
            ColumnType::Int64 => ColumnBuilder::Int64(Int64Builder::with_capacity(rows)),
            ColumnType::Float64 => ColumnBuilder::Float64(Float64Builder::with_capacity(rows)),
            ColumnType::Boolean => ColumnBuilder::Boolean(BooleanBuilder::with_capacity(rows)),
            ColumnType::Utf8 => ColumnBuilder::Utf8(StringBuilder::with_capacity(rows, text_bytes)),
            ColumnType::Json => ColumnBuilder::Json(StringBuilder::with_capacity(rows, text_bytes)),
            ColumnType::Date => ColumnBuilder::Date(Date32Builder::with_capacity(rows)),
            ColumnType::Timestamp => {
                ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::with_capacity(rows))
            }
            ColumnType::TimestampTz => ColumnBuilder::TimestampTz(
                TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            ),
            ColumnType::Decimal(precision, scale) => ColumnBuilder::Decimal(
                Decimal128Builder::with_capacity(rows)
                    .with_precision_and_scale(precision, i8::try_from(scale).unwrap_or(i8::MAX))
                    .unwrap_or_default(),
                precision,
                scale,
            ),
        }
    }

    /// The column's type, once known.
    pub fn column_type(&self) -> Option<ColumnType> {
        Some(match self {
            ColumnBuilder::Pending(_) => return None,
            ColumnBuilder::Int64(_) => ColumnType::Int64,
            ColumnBuilder::Float64(_) => ColumnType::Float64,
            ColumnBuilder::Boolean(_) => ColumnType::Boolean,
            ColumnBuilder::Utf8(_) => ColumnType::Utf8,
            ColumnBuilder::Json(_) => ColumnType::Json,
            ColumnBuilder::Date(_) => ColumnType::Date,
            ColumnBuilder::Timestamp(_) => ColumnType::Timestamp,
            ColumnBuilder::TimestampTz(_) => ColumnType::TimestampTz,
            ColumnBuilder::Decimal(_, precision, scale) => ColumnType::Decimal(*precision, *scale),
        })
    }

    /// Fixes the type of a pending column, keeping the nulls it counted.
    pub fn settle(&mut self, ty: ColumnType) {
        if let ColumnBuilder::Pending(nulls) = *self {
            *self = ColumnBuilder::typed(ty);
            for _ in 0..nulls {
                self.append_null();
            }
        }
    }

    /// Appends a null.
    pub fn append_null(&mut self) {
        match self {
            ColumnBuilder::Pending(n) => *n += 1,
            ColumnBuilder::Int64(b) => b.append_null(),
            ColumnBuilder::Float64(b) => b.append_null(),
            ColumnBuilder::Boolean(b) => b.append_null(),
            ColumnBuilder::Utf8(b) | ColumnBuilder::Json(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Timestamp(b) | ColumnBuilder::TimestampTz(b) => b.append_null(),
            ColumnBuilder::Decimal(b, ..) => b.append_null(),
        }
    }

    /// Turns the column into the narrowest wider type that also holds
    /// `value`, its values kept: BIGINT to DOUBLE for a number with a
    /// fraction (`1` then `2.5`; an integer past i64, which a DOUBLE
    /// would round, goes to VARCHAR), DATE to TIMESTAMP for a naive datetime,
    /// and VARCHAR for any other mix (`1` then `"A12"`, a naive datetime
    /// then a zoned one: no time zone is invented), the values so far
    /// rewritten as text. False for a column that holds any value already
    /// (VARCHAR, JSON) or has no type yet.
    pub fn widen(&mut self, value: &Scalar<'_>) -> bool {
        match (&mut *self, value) {
            (ColumnBuilder::Int64(ints), Scalar::Float(_)) => {
                let ints = ints.finish();
                let mut floats = Float64Builder::with_capacity(ints.len());
                for int in &ints {
                    floats.append_option(int.map(|i| i as f64));
                }
                *self = ColumnBuilder::Float64(floats);
                true
            }
            (ColumnBuilder::Date(days), Scalar::Str(s))
                if matches!(temporal::parse(s), Some(Temporal::Naive(_))) =>
            {
                let days = days.finish();
                let mut micros = TimestampMicrosecondBuilder::with_capacity(days.len());
                for day in &days {
                    micros.append_option(day.map(|d| i64::from(d) * 86_400_000_000));
                }
                *self = ColumnBuilder::Timestamp(micros);
                true
            }
            (ColumnBuilder::Pending(_) | ColumnBuilder::Utf8(_) | ColumnBuilder::Json(_), _) => {
                false
            }
            _ => {
                *self = ColumnBuilder::Utf8(self.as_text());
                true
            }
        }
    }

    /// The values so far as text, as a VARCHAR column would have held
    /// them: an integer's digits, a boolean's `true`/`false`, a date as
    /// `yyyy-mm-dd`, a timestamp as Lucca writes it (a zoned one in UTC,
    /// with `Z`). Leaves the builder empty.
    fn as_text(&mut self) -> StringBuilder {
        fn texts<T>(
            values: impl Iterator<Item = Option<T>>,
            show: impl Fn(T) -> String,
        ) -> StringBuilder {
            let mut text = StringBuilder::new();
            for value in values {
                text.append_option(value.map(&show));
            }
            text
        }
        match self {
            ColumnBuilder::Pending(nulls) => {
                let mut text = StringBuilder::new();
                text.append_nulls(std::mem::take(nulls));
                text
            }
            ColumnBuilder::Int64(b) => texts(b.finish().iter(), |i| i.to_string()),
            ColumnBuilder::Float64(b) => texts(b.finish().iter(), |f| f.to_string()),
            ColumnBuilder::Boolean(b) => texts(b.finish().iter(), |v| v.to_string()),
            ColumnBuilder::Utf8(b) | ColumnBuilder::Json(b) => {
                texts(b.finish().iter(), str::to_owned)
            }
            ColumnBuilder::Date(b) => texts(b.finish().iter(), temporal::format_date),
            ColumnBuilder::Timestamp(b) => texts(b.finish().iter(), temporal::format_datetime),
            ColumnBuilder::TimestampTz(b) => {
                texts(b.finish().iter(), |us| temporal::format_datetime(us) + "Z")
            }
            ColumnBuilder::Decimal(b, _, scale) => {
                let scale = *scale;
                texts(b.finish().iter(), |units| decimal_text(units, scale))
            }
        }
    }

    /// Appends a value, inferring the type of a pending column from it.
    /// Returns false, appending nothing, when the value does not fit the
    /// column's type.
    #[must_use]
    pub fn append(&mut self, value: &Scalar<'_>) -> bool {
        if matches!(value, Scalar::Null) {
            self.append_null();
            return true;
        }
        // Only a pending column infers its type (for a string, a date
        // parse that typed columns would otherwise pay on every value).
        if matches!(self, ColumnBuilder::Pending(_))
            && let Some(ty) = value.inferred_type()
        {
            self.settle(ty);
        }
        match (self, value) {
            (ColumnBuilder::Int64(b), Scalar::Int(i)) => b.append_value(*i),
            (ColumnBuilder::Int64(b), Scalar::Float(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                b.append_value(*f as i64)
            }
            // Text holding a number or boolean fits a declared column of
            // that type (`"00057"` into BIGINT).
            (ColumnBuilder::Int64(b), Scalar::Str(s)) => match s.trim().parse::<i64>() {
                Ok(i) => b.append_value(i),
                Err(_) => return false,
            },
            (ColumnBuilder::Float64(b), Scalar::Str(s)) => match s.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => b.append_value(f),
                _ => return false,
            },
            (ColumnBuilder::Boolean(b), Scalar::Str(s)) => match s.trim() {
                "true" => b.append_value(true),
                "false" => b.append_value(false),
                _ => return false,
            },
            (ColumnBuilder::Float64(b), Scalar::Float(f)) => b.append_value(*f),
            (ColumnBuilder::Float64(b), Scalar::Int(i)) => b.append_value(*i as f64),
            // A DOUBLE column (declared, or inferred from a fraction) holds
            // an approximation, as of any long number.
            (ColumnBuilder::Float64(b), Scalar::BigInt(digits)) => match digits.parse::<f64>() {
                Ok(f) if f.is_finite() => b.append_value(f),
                _ => return false,
            },
            (ColumnBuilder::Boolean(b), Scalar::Bool(v)) => b.append_value(*v),
            (ColumnBuilder::Utf8(b), Scalar::Str(s)) => b.append_value(s),
            // Any scalar has an exact text form.
            (ColumnBuilder::Utf8(b), Scalar::Int(i)) => b.append_value(i.to_string()),
            (ColumnBuilder::Utf8(b) | ColumnBuilder::Json(b), Scalar::BigInt(digits)) => {
                b.append_value(digits)
            }
            (ColumnBuilder::Utf8(b), Scalar::Float(f)) => b.append_value(f.to_string()),
            (ColumnBuilder::Utf8(b), Scalar::Bool(v)) => b.append_value(v.to_string()),
            (ColumnBuilder::Utf8(b) | ColumnBuilder::Json(b), Scalar::Json(j)) => b.append_value(j),
            (ColumnBuilder::Decimal(b, precision, scale), value) => {
                match decimal_units(value, *precision, *scale) {
                    Some(units) => b.append_value(units),
                    None => return false,
                }
            }
            (ColumnBuilder::Json(b), Scalar::Str(s)) => {
                b.append_value(serde_json::Value::from(s.as_ref()).to_string())
            }
            (ColumnBuilder::Json(b), Scalar::Int(i)) => b.append_value(i.to_string()),
            (ColumnBuilder::Json(b), Scalar::Float(f)) => b.append_value(f.to_string()),
            (ColumnBuilder::Json(b), Scalar::Bool(v)) => b.append_value(v.to_string()),
            (ColumnBuilder::Date(b), Scalar::Str(s)) => match temporal::parse(s) {
                Some(Temporal::Date(d)) => b.append_value(d),
                // Lucca writes many dates as midnight datetimes
                // (`birthDate: 1989-12-22T00:00:00`): exact as a DATE.
                Some(Temporal::Naive(us)) if us.rem_euclid(86_400_000_000) == 0 => {
                    match i32::try_from(us.div_euclid(86_400_000_000)) {
                        Ok(day) => b.append_value(day),
                        Err(_) => return false,
                    }
                }
                _ => return false,
            },
            (ColumnBuilder::Timestamp(b), Scalar::Str(s)) => match temporal::parse(s) {
                Some(Temporal::Naive(us)) => b.append_value(us),
                Some(Temporal::Date(d)) => b.append_value(i64::from(d) * 86_400_000_000),
                _ => return false,
            },
            (ColumnBuilder::TimestampTz(b), Scalar::Str(s)) => match temporal::parse(s) {
                Some(Temporal::Zoned(us)) => b.append_value(us),
                _ => return false,
            },
            _ => return false,
        }
        true
    }

    /// Takes the values built so far as an Arrow array, leaving the builder
    /// empty and of the same type. Pending columns have no array.
    ///
    /// The emptied builder gets the room the array took: batches are all
    /// the same size, and Arrow builders left to grow from nothing again
    /// reallocated and copied each buffer a dozen times per batch (4% of a
    /// run's CPU time).
    pub fn finish(&mut self) -> Option<ArrayRef> {
        let ty = self.column_type();
        let array: ArrayRef = match self {
            ColumnBuilder::Pending(n) => {
                *n = 0;
                return None;
            }
            ColumnBuilder::Int64(b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(b) => Arc::new(b.finish()),
            ColumnBuilder::Boolean(b) => Arc::new(b.finish()),
            ColumnBuilder::Utf8(b) | ColumnBuilder::Json(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) | ColumnBuilder::TimestampTz(b) => Arc::new(b.finish()),
            ColumnBuilder::Decimal(b, ..) => Arc::new(b.finish()),
        };
        if let Some(ty) = ty {
            let text_bytes = array
                .as_string_opt::<i32>()
                .map_or(0, |text| text.value_data().len());
            *self = Self::with_capacity(ty, array.len(), text_bytes);
        }
        Some(array)
    }

    /// True when nothing was appended since the last `finish`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values (nulls included) appended since the last `finish`.
    pub fn len(&self) -> usize {
        use arrow::array::ArrayBuilder;
        match self {
            ColumnBuilder::Pending(n) => *n,
            ColumnBuilder::Int64(b) => b.len(),
            ColumnBuilder::Float64(b) => b.len(),
            ColumnBuilder::Boolean(b) => b.len(),
            ColumnBuilder::Utf8(b) | ColumnBuilder::Json(b) => b.len(),
            ColumnBuilder::Date(b) => b.len(),
            ColumnBuilder::Timestamp(b) | ColumnBuilder::TimestampTz(b) => b.len(),
            ColumnBuilder::Decimal(b, ..) => b.len(),
        }
    }
}

/// A number as units of 10^-scale, if it fits `precision` digits: exact
/// from decimal text (`"12.50"`), rounded half away from zero from a float
/// (exact for the 15 significant digits a JSON number keeps as f64).
fn decimal_units(value: &Scalar<'_>, precision: u8, scale: u8) -> Option<i128> {
    let factor = 10i128.checked_pow(u32::from(scale))?;
    let units = match value {
        Scalar::Int(i) => i128::from(*i).checked_mul(factor)?,
        Scalar::Float(f) => {
            let scaled = (f * factor as f64).round();
            if !scaled.is_finite() || scaled.abs() >= 1e37 {
                return None;
            }
            scaled as i128
        }
        Scalar::Str(s) => parse_decimal(s.trim(), scale)?,
        Scalar::BigInt(digits) => parse_decimal(digits, scale)?,
        _ => return None,
    };
    let limit = 10i128.checked_pow(u32::from(precision))?;
    (units.abs() < limit).then_some(units)
}

/// Units of 10^-scale as decimal text: 1250 at scale 2 -> `12.50`.
fn decimal_text(units: i128, scale: u8) -> String {
    let digits = units.unsigned_abs().to_string();
    let scale = usize::from(scale);
    let sign = if units < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = digits.split_at(digits.len() - scale);
    format!("{sign}{whole}.{fraction}")
}

/// `-12.5` at scale 2 -> -1250; more fraction digits than `scale` is not
/// exact and does not fit.
fn parse_decimal(text: &str, scale: u8) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let fraction = fraction.trim_end_matches('0');
    if whole.is_empty() && fraction.is_empty()
        || fraction.len() > usize::from(scale)
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut units: i128 = 0;
    for b in whole.bytes().chain(fraction.bytes()) {
        units = units.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
    }
    units = units.checked_mul(10i128.checked_pow(u32::from(scale) - fraction.len() as u32)?)?;
    Some(if negative { -units } else { units })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn infers_then_holds_the_type() {
        let mut c = ColumnBuilder::Pending(0);
        c.append_null();
        assert!(c.append(&Scalar::Str(Cow::Borrowed("2014-09-01T00:00:00"))));
        assert_eq!(c.column_type(), Some(ColumnType::Timestamp));
        assert!(!c.append(&Scalar::Str(Cow::Borrowed("not a date"))));
        assert_eq!(c.len(), 2);
        let array = c.finish().unwrap_or_else(|| panic!("typed"));
        assert_eq!(array.null_count(), 1);
    }

    #[test]
    fn integers_fit_double_columns_but_fractions_do_not_fit_bigint() {
        let mut c = ColumnBuilder::typed(ColumnType::Float64);
        assert!(c.append(&Scalar::Int(3)));
        let mut c = ColumnBuilder::typed(ColumnType::Int64);
        assert!(c.append(&Scalar::Float(3.0)));
        assert!(!c.append(&Scalar::Float(3.5)));
    }
}
