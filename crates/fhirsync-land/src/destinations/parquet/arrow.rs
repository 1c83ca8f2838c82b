//! Arrow schema and record batches of view tables (and of any table of [`CellValue`]s), shared
//! by every Arrow-based writer: `view_schema` types the columns of rows held in memory,
//! [`DecimalFit`] a decimal column one value at a time (for a writer that streams its rows), and
//! [`cells_batch`] builds a batch for a schema.
//!
//! | [`ColumnKind`] | Arrow type |
//! |---|---|
//! | text, companion `_text`, collection (JSON text) | `Utf8` |
//! | integer | `Int64` |
//! | decimal | `Decimal128(38, s)`, `s` the largest scale among the values; `Utf8` holding the exact literal when a value has more than 38 digits or the values together need more (integer digits + `s` > 38) |
//! | boolean | `Boolean` |
//! | date | `Date32` |
//! | dateTime, instant | `Timestamp(Microsecond, "UTC")` (Parquet `TIMESTAMP(isAdjustedToUTC, MICROS)`) |
//!
//! The decimal precision is always 38 so a column's type changes only when a value with more
//! fraction digits arrives; a writer that needs one schema for several batches (a table format
//! appending to a table) computes it over all of them, or fixes it, and passes it to
//! [`cells_batch`], which refuses a value that does not fit.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Decimal128Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{ArrayRef, PrimitiveArray, RecordBatch};
#[cfg(any(feature = "delta", test))]
use arrow_schema::Schema;
use arrow_schema::{DataType, Field, SchemaRef, TimeUnit};
use chrono::NaiveDate;
use fhirsync_views::Decimal;
use fhirsync_views::decimal::MAX_DIGITS;

#[cfg(any(feature = "delta", test))]
use crate::views::TableColumn;
use crate::views::{CellValue, ColumnKind};
use crate::{Error, Result};

/// Time zone of timestamp columns.
pub(crate) const UTC: &str = "UTC";

/// The Arrow schema of a table with `columns`, decimals sized to the decimals in `rows`
/// (cells in `columns` order). Every column is nullable except `_fhir_version` and `_id`.
/// (The Parquet view writer types its decimal columns one value at a time with [`DecimalFit`].)
#[cfg(any(feature = "delta", test))]
pub(crate) fn view_schema(columns: &[TableColumn], rows: &[Vec<CellValue>]) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let nullable = !matches!(c.name.as_str(), "_fhir_version" | "_id");
            Field::new(&c.name, arrow_type(c.kind, rows.iter().map(|r| r.get(i))), nullable)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The Arrow type of a column of `kind` holding `cells`.
pub(crate) fn arrow_type<'a>(
    kind: ColumnKind,
    cells: impl Iterator<Item = Option<&'a CellValue>>,
) -> DataType {
    match kind {
        ColumnKind::Text | ColumnKind::Json => DataType::Utf8,
        ColumnKind::Integer => DataType::Int64,
        ColumnKind::Boolean => DataType::Boolean,
        ColumnKind::Date => DataType::Date32,
        ColumnKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        ColumnKind::Decimal => decimal_type(cells),
    }
}

/// `Decimal128(38, s)` for the largest scale `s` of the decimals, or `Utf8` when they do not fit.
fn decimal_type<'a>(cells: impl Iterator<Item = Option<&'a CellValue>>) -> DataType {
    let mut fit = DecimalFit::default();
    for cell in cells.flatten() {
        fit.add(cell);
    }
    fit.data_type()
}

/// The Arrow type a decimal column's values need, taken one value at a time (so a writer can
/// type a column without holding its values): what `view_schema` gives for the same cells.
#[derive(Debug, Clone, Default)]
pub(crate) struct DecimalFit {
    scale: u32,
    /// Digits before the point beyond the first (0: one digit at most).
    more_int_digits: u32,
    /// A value that is no Decimal128 (more than 38 digits): the column is text.
    text: bool,
    /// The kind of the first cell that is neither a decimal nor null (it fits no Decimal128).
    foreign: Option<&'static str>,
}

impl DecimalFit {
    /// Takes one cell of the column.
    pub(crate) fn add(&mut self, cell: &CellValue) {
        match cell {
            CellValue::Decimal(text) if !self.text => match text.parse::<Decimal>() {
                Ok(d) => {
                    self.scale = self.scale.max(d.scale());
                    self.more_int_digits = self.more_int_digits.max(d.integer_digits().saturating_sub(1));
                }
                Err(_) => self.text = true,
            },
            CellValue::Decimal(_) | CellValue::Null => {}
            other => {
                self.foreign.get_or_insert(other.kind());
            }
        }
    }

    /// `Decimal128(38, s)` for the largest scale `s` of the values, or `Utf8` when they do not fit.
    pub(crate) fn data_type(&self) -> DataType {
        if self.text || 1 + self.more_int_digits + self.scale > MAX_DIGITS {
            return DataType::Utf8;
        }
        // Both fit in u8/i8: at most 38.
        DataType::Decimal128(MAX_DIGITS as u8, self.scale as i8)
    }

    /// The kind of a cell the column holds that its [`DecimalFit::data_type`] cannot, if any
    /// ([`cells_batch`] would refuse it).
    pub(crate) fn misfit(&self) -> Option<&'static str> {
        self.foreign.filter(|_| self.data_type() != DataType::Utf8)
    }
}

/// The decimal column `text` (the exact literals, as [`cells_batch`] writes a decimal column
/// typed `Utf8`) as the array [`cells_batch`] builds for `field` (`Decimal128(38, s)`, or `Utf8`
/// kept as it is).
///
/// Fails if a value does not fit the field, as [`cells_batch`] does.
pub(crate) fn typed_decimals(text: &ArrayRef, field: &Field) -> Result<ArrayRef> {
    let DataType::Decimal128(_, scale) = field.data_type() else { return Ok(text.clone()) };
    let misfit = || Error::CellType {
        column: field.name().clone(),
        arrow_type: field.data_type().to_string(),
        cell: "decimal",
    };
    let text = text.as_string_opt::<i32>().ok_or_else(misfit)?;
    let scale = u32::try_from(*scale).unwrap_or(0);
    let values = text.iter().map(|v| match v {
        None => Ok(None),
        Some(s) => decimal_mantissa(s, scale).map(Some).ok_or_else(misfit),
    });
    let array = values.collect::<Result<PrimitiveArray<Decimal128Type>>>()?;
    Ok(Arc::new(array.with_data_type(field.data_type().clone())))
}

/// A record batch of `rows` (cells in schema order) for `schema`.
///
/// Fails if a cell does not fit its field: a decimal beyond the field's scale or precision, or
/// a cell of another kind than the field's type holds.
pub(crate) fn cells_batch(schema: &SchemaRef, rows: &[Vec<CellValue>]) -> Result<RecordBatch> {
    let columns = (schema.fields().iter().enumerate())
        .map(|(i, field)| column_array(field, rows, i))
        .collect::<Result<Vec<ArrayRef>>>()?;
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|source| Error::Arrow { action: "building a batch", source })
}

/// Column `i` of `rows` as an array of `field`'s type.
fn column_array(field: &Field, rows: &[Vec<CellValue>], i: usize) -> Result<ArrayRef> {
    let cells = rows.iter().map(|r| r.get(i).unwrap_or(&CellValue::Null));
    let misfit = |cell: &CellValue| Error::CellType {
        column: field.name().clone(),
        arrow_type: field.data_type().to_string(),
        cell: cell.kind(),
    };
    Ok(match field.data_type() {
        DataType::Int64 => {
            let values = cells.map(|c| match c {
                CellValue::Null => Ok(None),
                CellValue::Int(v) => Ok(Some(*v)),
                other => Err(misfit(other)),
            });
            Arc::new(values.collect::<Result<PrimitiveArray<Int64Type>>>()?)
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::with_capacity(rows.len());
            for c in cells {
                match c {
                    CellValue::Null => b.append_null(),
                    CellValue::Bool(v) => b.append_value(*v),
                    other => return Err(misfit(other)),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Date32 => {
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
            let values = cells.map(|c| match c {
                CellValue::Null => Ok(None),
                CellValue::Date(d) => i32::try_from((*d - epoch).num_days()).map(Some).map_err(|_| misfit(c)),
                other => Err(misfit(other)),
            });
            Arc::new(values.collect::<Result<PrimitiveArray<Date32Type>>>()?)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let values = cells.map(|c| match c {
                CellValue::Null => Ok(None),
                CellValue::Timestamp(t) => Ok(Some(t.timestamp_micros())),
                other => Err(misfit(other)),
            });
            let array = values.collect::<Result<PrimitiveArray<TimestampMicrosecondType>>>()?;
            Arc::new(array.with_data_type(field.data_type().clone()))
        }
        DataType::Decimal128(_, scale) => {
            let scale = u32::try_from(*scale).unwrap_or(0);
            let values = cells.map(|c| match c {
                CellValue::Null => Ok(None),
                CellValue::Decimal(text) => decimal_mantissa(text, scale).map(Some).ok_or_else(|| misfit(c)),
                other => Err(misfit(other)),
            });
            let array = values.collect::<Result<PrimitiveArray<Decimal128Type>>>()?;
            Arc::new(array.with_data_type(field.data_type().clone()))
        }
        _ => Arc::new(text_array(cells, rows.len())),
    })
}

/// The decimal literal `text` as a mantissa at `scale`, or `None` when it does not fit.
fn decimal_mantissa(text: &str, scale: u32) -> Option<i128> {
    text.parse::<Decimal>().ok().and_then(|d| d.rescaled(scale)).map(|d| d.mantissa())
}

/// `cells` as text: any kind of cell, in its canonical text form.
fn text_array<'a>(cells: impl Iterator<Item = &'a CellValue>, len: usize) -> arrow_array::StringArray {
    let mut b = StringBuilder::with_capacity(len, len * 16);
    for c in cells {
        match c {
            CellValue::Null => b.append_null(),
            CellValue::Text(s) | CellValue::Decimal(s) => b.append_value(s),
            CellValue::Json(v) => b.append_value(v.to_string()),
            CellValue::Int(v) => b.append_value(v.to_string()),
            CellValue::Bool(v) => b.append_value(v.to_string()),
            CellValue::Date(d) => b.append_value(d.format("%Y-%m-%d").to_string()),
            CellValue::Timestamp(t) => b.append_value(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        }
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;

    use super::*;

    fn decimals(texts: &[&str]) -> Vec<Vec<CellValue>> {
        texts.iter().map(|t| vec![CellValue::Decimal(t.to_string())]).collect()
    }

    fn col(kind: ColumnKind) -> Vec<TableColumn> {
        vec![TableColumn { name: "v".into(), kind }]
    }

    /// Decimals become Decimal128(38, largest scale) with every value rescaled exactly.
    #[test]
    fn decimals_fit_decimal128() {
        let rows = decimals(&["1.50", "0.10", "1e+2", "123456789012345678.9"]);
        let schema = view_schema(&col(ColumnKind::Decimal), &rows);
        assert_eq!(schema.field(0).data_type(), &DataType::Decimal128(38, 2));
        let batch = cells_batch(&schema, &rows).unwrap();
        let a = batch.column(0).as_primitive::<Decimal128Type>();
        let shown: Vec<String> = (0..a.len()).map(|i| a.value_as_string(i)).collect();
        assert_eq!(shown, ["1.50", "0.10", "100.00", "123456789012345678.90"]);
    }

    /// Decimals that no Decimal128 holds together keep their exact text.
    #[test]
    fn oversized_decimals_stay_text() {
        let wide = decimals(&["12345678901234567890123456789012345678", "0.5"]);
        let schema = view_schema(&col(ColumnKind::Decimal), &wide);
        assert_eq!(schema.field(0).data_type(), &DataType::Utf8);
        let batch = cells_batch(&schema, &wide).unwrap();
        assert_eq!(batch.column(0).as_string::<i32>().value(1), "0.5");
        let long = decimals(&["1234567890123456789012345678901234567890.5"]);
        assert_eq!(view_schema(&col(ColumnKind::Decimal), &long).field(0).data_type(), &DataType::Utf8);
    }

    /// A value that does not fit a given schema is an error, not a silent rounding.
    #[test]
    fn misfit_is_an_error() {
        let schema = view_schema(&col(ColumnKind::Decimal), &decimals(&["1.5"]));
        assert!(cells_batch(&schema, &decimals(&["1.55"])).is_err());
        assert!(cells_batch(&schema, &[vec![CellValue::Text("x".into())]]).is_err());
    }
}
