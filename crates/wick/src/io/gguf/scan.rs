//! A minimal walk over a GGUF header, used only to name the tensor candle refused.

pub fn ggml_type_name(id: u32) -> &'static str {
    // ggml's `enum ggml_type`, by id (retired types, like 4 and 5, keep their ids).
    const NAMES: &str = "F32 F16 Q4_0 Q4_1 Q4_2 Q4_3 Q5_0 Q5_1 Q8_0 Q8_1 Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K IQ2_XXS IQ2_XS IQ3_XXS IQ1_S IQ4_NL IQ3_S IQ2_S IQ4_XS I8 I16 I32 I64 F64 IQ1_M BF16 Q4_0_4_4 Q4_0_4_8 Q4_0_8_8 TQ1_0 TQ2_0 IQ4_NL_4_4 IQ4_NL_4_8 IQ4_NL_8_8 MXFP4";
    NAMES.split(' ').nth(id as usize).unwrap_or("unknown")
}

const KNOWN: [u32; 15] = [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 30];

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    wide: bool,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn len(&mut self) -> Option<usize> {
        let n = if self.wide {
            self.u64()?
        } else {
            self.u32()? as u64
        };
        usize::try_from(n).ok()
    }
    fn string(&mut self) -> Option<String> {
        let n = self.len()?;
        Some(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    fn skip_value(&mut self, ty: u32, depth: u32) -> Option<()> {
        let fixed = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => {
                let n = self.len()?;
                self.take(n)?;
                return Some(());
            }
            9 if depth < 4 => {
                let inner = self.u32()?;
                let n = self.len()?;
                for _ in 0..n {
                    self.skip_value(inner, depth + 1)?;
                }
                return Some(());
            }
            _ => return None,
        };
        self.take(fixed).map(|_| ())
    }
}

/// A tensor's entry in the header: its name, ggml type id, and where that id is stored.
pub struct TensorType {
    pub name: String,
    pub type_id: u32,
    pub type_pos: usize,
}

/// Every tensor's type as stored, and the header's length up to the end of the tensor infos;
/// None if the header is not readable that far.
pub fn tensor_types(bytes: &[u8]) -> Option<(Vec<TensorType>, usize)> {
    let mut r = Reader {
        bytes,
        pos: 4,
        wide: true,
    };
    r.wide = r.u32()? >= 2;
    let n_tensors = r.len()?;
    let n_kv = r.len()?;
    for _ in 0..n_kv {
        r.string()?;
        let ty = r.u32()?;
        r.skip_value(ty, 0)?;
    }
    // Each entry takes at least 16 bytes: a bogus count fails here, not in an allocation.
    let mut out = Vec::with_capacity(n_tensors.min(bytes.len() / 16));
    for _ in 0..n_tensors {
        let name = r.string()?;
        let n_dims = r.u32()?;
        for _ in 0..n_dims {
            r.len()?;
        }
        let type_pos = r.pos;
        let type_id = r.u32()?;
        r.u64()?;
        out.push(TensorType {
            name,
            type_id,
            type_pos,
        });
    }
    Some((out, r.pos))
}

/// Whether candle's header reader knows the type id.
pub fn candle_knows(type_id: u32) -> bool {
    KNOWN.contains(&type_id)
}
