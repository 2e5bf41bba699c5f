//! `tojson`: Python's `json.dumps` as transformers' chat-template environment calls it.

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{ErrorKind, State, Value};
use serde::Serialize;

use super::python::Generator;

/// transformers' `tojson`: Python `json.dumps` with `ensure_ascii=False` and no HTML escaping.
pub(super) fn tojson(
    state: &State,
    value: &Value,
    kwargs: Kwargs,
) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    serializable(value)?;
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be a pair of strings",
            ))
        }
        // Python drops the space after ',' when indenting (the newline follows).
        None if indent.is_some() => (",".into(), ": ".into()),
        None => (", ".into(), ": ".into()),
    };
    let value = if sort_keys.unwrap_or(false) {
        sorted_keys(value)
    } else {
        value.clone()
    };
    let mut out = Charged {
        state,
        bytes: Vec::new(),
        uncharged: 0,
        out_of_fuel: None,
    };
    let formatter = PyFormatter {
        indent,
        item_sep: &item_sep,
        key_sep: &key_sep,
        level: 0,
        has_value: false,
    };
    let written = value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut out, formatter,
    ));
    if let Some(e) = out.out_of_fuel.take() {
        return Err(e);
    }
    written.map_err(|e| minijinja::Error::new(ErrorKind::BadSerialization, e.to_string()))?;
    let json = String::from_utf8_lossy(&out.bytes);
    if !ensure_ascii.unwrap_or(false) {
        return Ok(Value::from(json.into_owned()));
    }
    // Non-ASCII only occurs inside JSON strings, where \uXXXX escapes are valid.
    let mut escaped = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            escaped.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                escaped.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    Ok(Value::from(escaped))
}

/// Python's `json.dumps` refuses jinja2's undefined and generators (the result of `map`,
/// `select`, ...); minijinja would write `null` and a list.
fn serializable(value: &Value) -> std::result::Result<(), minijinja::Error> {
    let refuse = |what: &str| {
        Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: Object of type {what} is not JSON serializable"),
        ))
    };
    match value.kind() {
        ValueKind::Undefined => refuse("Undefined"),
        _ if value.downcast_object_ref::<Generator>().is_some() => {
            refuse("generator (the result of map/select/reject; add |list)")
        }
        ValueKind::Seq | ValueKind::Iterable => {
            for item in value.try_iter()? {
                serializable(&item)?;
            }
            Ok(())
        }
        ValueKind::Map => {
            for key in value.try_iter()? {
                serializable(&value.get_item(&key)?)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A buffer that charges the render's fuel as it fills, so a huge indent or value stops at the
/// budget instead of being built first.
struct Charged<'a, 'env> {
    state: &'a State<'a, 'env>,
    bytes: Vec<u8>,
    uncharged: usize,
    out_of_fuel: Option<minijinja::Error>,
}

impl std::io::Write for Charged<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.uncharged += buf.len();
        if self.uncharged >= 4096 {
            if let Err(e) = self.state.consume_fuel((self.uncharged / 64) as u64) {
                self.out_of_fuel = Some(e);
                return Err(std::io::Error::other("out of fuel"));
            }
            self.uncharged %= 64;
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A copy of `value` with every map's keys in sorted order (`sort_keys=True`).
fn sorted_keys(value: &Value) -> Value {
    match value.kind() {
        ValueKind::Map => {
            let mut keys: Vec<Value> = value.try_iter().map(|it| it.collect()).unwrap_or_default();
            keys.sort();
            let pairs: Vec<(Value, Value)> = keys
                .into_iter()
                .map(|k| {
                    let v = value.get_item(&k).unwrap_or_default();
                    (k, sorted_keys(&v))
                })
                .collect();
            Value::from_pairs(pairs)
        }
        ValueKind::Seq => match value.try_iter() {
            Ok(items) => items.map(|v| sorted_keys(&v)).collect(),
            Err(_) => value.clone(),
        },
        _ => value.clone(),
    }
}

/// serde_json output in Python's `json.dumps` layout: configurable separators, and with an
/// indent one item per line (empty containers stay `[]` / `{}`).
struct PyFormatter<'a> {
    indent: Option<usize>,
    item_sep: &'a str,
    key_sep: &'a str,
    level: usize,
    has_value: bool,
}

type IoResult = std::io::Result<()>;

impl PyFormatter<'_> {
    fn newline<W: ?Sized + std::io::Write>(&self, w: &mut W) -> IoResult {
        if let Some(width) = self.indent {
            w.write_all(b"\n")?;
            // In pieces: the writer charges fuel as it goes, so a huge indent never is one
            // huge allocation.
            const SPACES: [u8; 64] = [b' '; 64];
            let mut left = width.saturating_mul(self.level);
            while left > 0 {
                let n = left.min(SPACES.len());
                w.write_all(&SPACES[..n])?;
                left -= n;
            }
        }
        Ok(())
    }

    fn open<W: ?Sized + std::io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> IoResult {
        self.level += 1;
        self.has_value = false;
        w.write_all(bracket)
    }

    fn close<W: ?Sized + std::io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> IoResult {
        self.level -= 1;
        if self.has_value {
            self.newline(w)?;
        }
        w.write_all(bracket)
    }

    fn item<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> IoResult {
        if !first {
            w.write_all(self.item_sep.as_bytes())?;
        }
        self.newline(w)
    }
}

impl serde_json::ser::Formatter for PyFormatter<'_> {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> IoResult {
        self.open(w, b"[")
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> IoResult {
        self.close(w, b"]")
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> IoResult {
        self.item(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> IoResult {
        self.has_value = true;
        Ok(())
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> IoResult {
        self.open(w, b"{")
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> IoResult {
        self.close(w, b"}")
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> IoResult {
        self.item(w, first)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> IoResult {
        w.write_all(self.key_sep.as_bytes())
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> IoResult {
        self.has_value = true;
        Ok(())
    }
}
