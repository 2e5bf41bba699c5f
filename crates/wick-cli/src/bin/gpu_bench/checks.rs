//! Every CUDA op against its reference: fresh random inputs, odd sizes, non-contiguous inputs,
//! f32/bf16/f16, and outputs allocated on poisoned (NaN-filled, then freed) device memory.
//! Pass: ‖out − ref‖ / ‖ref‖ ≤ 1e-5 (f32) or ≤ 1e-2 (bf16/f16), no NaN anywhere.

use wick::candle_core::{self as candle_core, DType, Device, Result, Tensor, Var};
use wick::nn::{Linear, LoraAdapter, LoraMode};
use wick::ops;
use wick::ops::linear::Activation;

type OpFn = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;

#[derive(Clone, Copy)]
enum Kind {
    Normal(f32),
    /// 0 or a large negative (attention bias), about a fifth masked.
    Mask,
    /// 0, then a large negative over a random tail (under a third) of the last dim, per row:
    /// a key-padding bias. The first key is never masked.
    Padding,
}

struct Input {
    shape: Vec<usize>,
    kind: Kind,
    /// Generated with the last two dims swapped and transposed back: a strided view.
    transposed: bool,
}

fn input(shape: &[usize], kind: Kind, transposed: bool) -> Input {
    Input {
        shape: shape.to_vec(),
        kind,
        transposed,
    }
}

struct Case {
    name: String,
    inputs: Vec<Input>,
    fast: OpFn,
    reference: OpFn,
}

fn case(name: &str, inputs: Vec<Input>, fast: OpFn, reference: OpFn) -> Case {
    Case {
        name: name.into(),
        inputs,
        fast,
        reference,
    }
}

fn make(inp: &Input) -> Result<Tensor> {
    let mut shape = inp.shape.clone();
    let n = shape.len();
    if inp.transposed {
        shape.swap(n - 1, n - 2);
    }
    let t = match inp.kind {
        Kind::Normal(std) => Tensor::randn(0f32, std, shape, &Device::Cpu)?,
        Kind::Mask => {
            let u = Tensor::rand(0f32, 1.0, shape, &Device::Cpu)?;
            (u.lt(0.2)?.to_dtype(DType::F32)? * -1e9)?
        }
        Kind::Padding => {
            let len = *shape.last().unwrap_or(&1);
            let rows = shape.iter().product::<usize>() / len.max(1);
            let cut = Tensor::rand(0f32, 1.0, rows, &Device::Cpu)?.to_vec1::<f32>()?;
            let v: Vec<f32> = cut
                .iter()
                .flat_map(|u| {
                    let keep = len - (u * (len / 3) as f32) as usize;
                    (0..len).map(move |j| if j >= keep { -1e9 } else { 0.0 })
                })
                .collect();
            Tensor::from_vec(v, shape, &Device::Cpu)?
        }
    };
    Ok(t)
}

fn view(t: &Tensor, inp: &Input) -> Result<Tensor> {
    let n = t.rank();
    if inp.transposed {
        t.transpose(n - 1, n - 2)
    } else {
        Ok(t.clone())
    }
}

/// Fills and frees a block of device memory with NaN so that the next allocations land on it.
fn poison(dev: &Device) -> Result<()> {
    let p = Tensor::full(f32::NAN, 16 << 20, dev)?;
    dev.synchronize()?;
    drop(p);
    Ok(())
}

fn rel_err(out: &Tensor, reference: &Tensor) -> Result<(f64, usize)> {
    let o = out
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?;
    let r = reference.to_dtype(DType::F64)?.flatten_all()?;
    let nan = o
        .to_vec1::<f64>()?
        .iter()
        .filter(|x| !x.is_finite())
        .count();
    let num = (&o - &r)?.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    let den = r.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt().max(1e-30);
    Ok((num / den, nan))
}

fn cases() -> Vec<Case> {
    let n = |s: f32| Kind::Normal(s);
    let mut v = vec![
        case(
            "linear (x·Wᵀ)",
            vec![
                input(&[3, 67, 129], n(1.0), false),
                input(&[97, 129], n(0.1), false),
            ],
            Box::new(|t| ops::linear::linear(&t[0], &t[1], None, Activation::Identity)),
            Box::new(|t| ops::linear::linear_reference(&t[0], &t[1], None, Activation::Identity)),
        ),
        case(
            "linear+bias+gelu",
            vec![
                input(&[2, 33, 385], n(1.0), false),
                input(&[1537, 385], n(0.05), false),
                input(&[1537], n(0.5), false),
            ],
            Box::new(|t| ops::linear::linear(&t[0], &t[1], Some(&t[2]), Activation::GeluErf)),
            Box::new(|t| {
                ops::linear::linear_reference(&t[0], &t[1], Some(&t[2]), Activation::GeluErf)
            }),
        ),
        case(
            "linear strided x",
            vec![
                input(&[5, 63, 130], n(1.0), true),
                input(&[31, 130], n(0.1), false),
            ],
            Box::new(|t| ops::linear::linear(&t[0], &t[1], None, Activation::Identity)),
            Box::new(|t| ops::linear::linear_reference(&t[0], &t[1], None, Activation::Identity)),
        ),
        case(
            "linear gemv 3 rows+bias",
            vec![
                input(&[3, 896], n(1.0), false),
                input(&[1153, 896], n(0.05), false),
                input(&[1153], n(0.5), false),
            ],
            Box::new(|t| ops::linear::linear(&t[0], &t[1], Some(&t[2]), Activation::Identity)),
            Box::new(|t| {
                ops::linear::linear_reference(&t[0], &t[1], Some(&t[2]), Activation::Identity)
            }),
        ),
        case(
            "linear gemv 8 rows odd k",
            vec![
                input(&[8, 131], n(1.0), false),
                input(&[97, 131], n(0.1), false),
            ],
            Box::new(|t| ops::linear::linear(&t[0], &t[1], None, Activation::Identity)),
            Box::new(|t| ops::linear::linear_reference(&t[0], &t[1], None, Activation::Identity)),
        ),
        case(
            "rms_norm",
            vec![
                input(&[5, 37, 897], n(3.0), true),
                input(&[897], n(1.0), false),
            ],
            Box::new(|t| ops::rms_norm::rms_norm(&t[0], &t[1], 1e-6)),
            Box::new(|t| ops::rms_norm::rms_norm_reference(&t[0], &t[1], 1e-6)),
        ),
        case(
            "layer_norm",
            vec![
                input(&[3, 385, 41], n(2.0), true),
                input(&[41], n(1.0), false),
                input(&[41], n(1.0), false),
            ],
            Box::new(|t| ops::layer_norm::layer_norm(&t[0], &t[1], &t[2], 1e-12)),
            Box::new(|t| ops::layer_norm::layer_norm_reference(&t[0], &t[1], &t[2], 1e-12)),
        ),
        case(
            "softmax",
            vec![
                input(&[4, 13, 1031], n(4.0), false),
                input(&[1031], Kind::Mask, false),
            ],
            Box::new(|t| ops::softmax::softmax_last_dim(&t[0].broadcast_add(&t[1])?)),
            Box::new(|t| ops::softmax::softmax_last_dim_reference(&t[0].broadcast_add(&t[1])?)),
        ),
        case(
            "rope",
            vec![
                input(&[2, 7, 14, 64], n(1.0), false),
                input(&[2, 7, 32], n(1.0), false),
                input(&[2, 7, 32], n(1.0), false),
            ],
            // (b, s, h, d) -> (b, h, s, d): the strided view the model hands over.
            Box::new(|t| ops::rope::rope(&t[0].transpose(1, 2)?, &t[1], &t[2])),
            Box::new(|t| ops::rope::rope_reference(&t[0].transpose(1, 2)?, &t[1], &t[2])),
        ),
        case(
            "swiglu",
            vec![
                input(&[3, 7, 4865], n(3.0), true),
                input(&[3, 7, 4865], n(1.0), false),
            ],
            Box::new(|t| ops::swiglu::swiglu(&t[0], &t[1])),
            Box::new(|t| ops::swiglu::swiglu_reference(&t[0], &t[1])),
        ),
    ];
    v.push(case(
        "linear+bias+residual",
        vec![
            input(&[2, 65, 1537], n(1.0), false),
            input(&[385, 1537], n(0.05), false),
            input(&[385], n(0.5), false),
            input(&[2, 65, 385], n(1.0), false),
        ],
        Box::new(|t| ops::linear::linear_add(&t[0], &t[1], Some(&t[2]), &t[3])),
        Box::new(|t| {
            ops::linear::linear_reference(&t[0], &t[1], Some(&t[2]), Activation::Identity)? + &t[3]
        }),
    ));
    v.push(case(
        "merge heads",
        vec![input(&[3, 12, 37, 32], n(1.0), false)],
        Box::new(|t| ops::elementwise::merge_heads(&t[0])),
        Box::new(|t| t[0].transpose(1, 2)?.reshape((3, 37, 384))),
    ));
    v.push(case(
        "cast to f32 and add rounded",
        vec![
            input(&[7, 4865], n(2.0), false),
            input(&[7, 4865], n(1.0), false),
        ],
        Box::new(|t| {
            let b = ops::elementwise::to_dtype(&t[1], DType::F32)?.affine(0.37, 0.0)?;
            ops::elementwise::add_rounded(&t[0], &b)
        }),
        Box::new(|t| &t[0] + t[1].affine(0.37, 0.0)?),
    ));
    // Prefill attention: GQA 14/2 heads, a padding bias, odd length, strided q.
    v.push(case(
        "sdpa prefill gqa",
        vec![
            input(&[2, 77, 14, 64], n(1.0), false),
            input(&[2, 2, 77, 64], n(1.0), false),
            input(&[2, 2, 77, 64], n(1.0), false),
            input(&[2, 1, 77, 77], Kind::Mask, false),
        ],
        Box::new(|t| {
            ops::attention::sdpa(&t[0].transpose(1, 2)?, &t[1], &t[2], Some(&t[3]), 0.125)
        }),
        Box::new(|t| {
            ops::attention::sdpa_reference(&t[0].transpose(1, 2)?, &t[1], &t[2], Some(&t[3]), 0.125)
        }),
    ));
    // Decode attention: one query over the first 301 slots of a 512-slot cache.
    v.push(case(
        "sdpa decode over cache",
        vec![
            input(&[8, 14, 1, 64], n(1.0), false),
            input(&[8, 2, 512, 64], n(1.0), false),
            input(&[8, 2, 512, 64], n(1.0), false),
        ],
        Box::new(|t| {
            let (k, v) = (t[1].narrow(2, 0, 301)?, t[2].narrow(2, 0, 301)?);
            ops::attention::sdpa(&t[0], &k, &v, None, 0.125)
        }),
        Box::new(|t| {
            let (k, v) = (t[1].narrow(2, 0, 301)?, t[2].narrow(2, 0, 301)?);
            ops::attention::sdpa_reference(&t[0], &k, &v, None, 0.125)
        }),
    ));
    // LoRA linear: x·Wᵀ + s·(x·Aᵀ)·Bᵀ with r = 16.
    v.push(case(
        "lora linear",
        vec![
            input(&[3, 41, 897], n(1.0), false),
            input(&[4865, 897], n(0.05), false),
            input(&[16, 897], n(0.1), false),
            input(&[4865, 16], n(0.1), false),
        ],
        Box::new(|t| lora_linear(t, true)),
        Box::new(|t| lora_linear(t, false)),
    ));
    v.extend(attn_cases());
    v
}

/// How a flash-attention check lays out its inputs.
#[derive(Clone, Copy)]
enum AttnLayout {
    /// q (b, h, lq, d); k/v (b, kvh, lk + extra, d) narrowed to lk keys (a KV cache view).
    Plain { extra: usize },
    /// q generated (b, lq, h, d) and transposed (the strided view a projection gives).
    SeqMajor,
    /// q/k/v narrowed out of one fused (b, l, 3, h, d) projection and transposed.
    Fused,
}

#[derive(Clone, Copy)]
enum AttnBias {
    None,
    /// (b, 1, lq, lk), about a fifth masked at random.
    Mask,
    /// (b, 1, 1, lk), a random tail of each sequence masked (BERT key padding).
    Padding,
}

#[derive(Clone, Copy)]
struct AttnSpec {
    name: &'static str,
    b: usize,
    h: usize,
    kvh: usize,
    lq: usize,
    lk: usize,
    d: usize,
    causal: bool,
    bias: AttnBias,
    layout: AttnLayout,
}

const ATTN_SPECS: [AttnSpec; 7] = [
    AttnSpec {
        name: "flash gqa14/2 d64 causal",
        b: 2,
        h: 14,
        kvh: 2,
        lq: 130,
        lk: 130,
        d: 64,
        causal: true,
        bias: AttnBias::None,
        layout: AttnLayout::SeqMajor,
    },
    AttnSpec {
        name: "flash 12/12 d32 mask",
        b: 3,
        h: 12,
        kvh: 12,
        lq: 37,
        lk: 37,
        d: 32,
        causal: false,
        bias: AttnBias::Mask,
        layout: AttnLayout::Plain { extra: 0 },
    },
    AttnSpec {
        name: "flash fused d32 padding",
        b: 5,
        h: 12,
        kvh: 12,
        lq: 128,
        lk: 128,
        d: 32,
        causal: false,
        bias: AttnBias::Padding,
        layout: AttnLayout::Fused,
    },
    AttnSpec {
        name: "flash d128 pad causal q<k",
        b: 2,
        h: 4,
        kvh: 2,
        lq: 19,
        lk: 77,
        d: 128,
        causal: true,
        bias: AttnBias::Padding,
        layout: AttnLayout::Plain { extra: 19 },
    },
    AttnSpec {
        name: "flash gqa14/2 mask causal q<k",
        b: 1,
        h: 14,
        kvh: 2,
        lq: 37,
        lk: 130,
        d: 64,
        causal: true,
        bias: AttnBias::Mask,
        layout: AttnLayout::Plain { extra: 5 },
    },
    AttnSpec {
        name: "flash d128 causal 37",
        b: 2,
        h: 12,
        kvh: 12,
        lq: 37,
        lk: 37,
        d: 128,
        causal: true,
        bias: AttnBias::None,
        layout: AttnLayout::SeqMajor,
    },
    AttnSpec {
        name: "flash d64 mask 130",
        b: 2,
        h: 6,
        kvh: 3,
        lq: 130,
        lk: 130,
        d: 64,
        causal: false,
        bias: AttnBias::Mask,
        layout: AttnLayout::Plain { extra: 0 },
    },
];

impl AttnSpec {
    fn scale(&self) -> f64 {
        1.0 / (self.d as f64).sqrt()
    }

    /// The generated inputs: the tensors (q, k, v or one fused qkv) and the bias, if any.
    fn inputs(&self) -> Vec<Input> {
        let n = Kind::Normal(1.0);
        let (b, h, kvh, lq, lk, d) = (self.b, self.h, self.kvh, self.lq, self.lk, self.d);
        let mut v = match self.layout {
            AttnLayout::Plain { extra } => vec![
                input(&[b, h, lq, d], n, false),
                input(&[b, kvh, lk + extra, d], n, false),
                input(&[b, kvh, lk + extra, d], n, false),
            ],
            AttnLayout::SeqMajor => vec![
                input(&[b, lq, h, d], n, false),
                input(&[b, kvh, lk, d], n, false),
                input(&[b, kvh, lk, d], n, false),
            ],
            AttnLayout::Fused => vec![input(&[b, lq, 3, h, d], n, false)],
        };
        match self.bias {
            AttnBias::None => {}
            AttnBias::Mask => v.push(input(&[b, 1, lq, lk], Kind::Mask, false)),
            AttnBias::Padding => v.push(input(&[b, 1, 1, lk], Kind::Padding, false)),
        }
        v
    }

    /// (q, k, v, bias) views of the generated tensors.
    fn views(&self, t: &[Tensor]) -> Result<(Tensor, Tensor, Tensor, Option<Tensor>)> {
        let (q, k, v, rest) = match self.layout {
            AttnLayout::Plain { .. } => (
                t[0].clone(),
                t[1].narrow(2, 0, self.lk)?,
                t[2].narrow(2, 0, self.lk)?,
                &t[3..],
            ),
            AttnLayout::SeqMajor => (t[0].transpose(1, 2)?, t[1].clone(), t[2].clone(), &t[3..]),
            AttnLayout::Fused => {
                let part = |i: usize| t[0].narrow(2, i, 1)?.squeeze(2)?.transpose(1, 2);
                (part(0)?, part(1)?, part(2)?, &t[1..])
            }
        };
        Ok((q, k, v, rest.first().cloned()))
    }

    fn fast(&self, t: &[Tensor]) -> Result<Tensor> {
        let (q, k, v, bias) = self.views(t)?;
        ops::cuda::flash::flash_attention(&q, &k, &v, bias.as_ref(), self.causal, self.scale())
    }

    /// `sdpa_reference` with the causal mask folded into the bias (on the CPU, f32).
    fn reference(&self, t: &[Tensor]) -> Result<Tensor> {
        let (q, k, v, bias) = self.views(t)?;
        let bias = if self.causal {
            let shift = self.lk as i64 - self.lq as i64;
            let m: Vec<f32> = (0..self.lq as i64)
                .flat_map(|i| {
                    (0..self.lk as i64).map(move |j| if j > i + shift { -1e9 } else { 0.0 })
                })
                .collect();
            let m = Tensor::from_vec(m, (1, 1, self.lq, self.lk), q.device())?;
            Some(match bias {
                Some(b) => b.to_dtype(DType::F32)?.broadcast_add(&m)?,
                None => m,
            })
        } else {
            bias
        };
        ops::attention::sdpa_reference(&q, &k, &v, bias.as_ref(), self.scale())
    }
}

fn attn_cases() -> Vec<Case> {
    ATTN_SPECS
        .iter()
        .map(|s| {
            let (s1, s2) = (*s, *s);
            case(
                s.name,
                s.inputs(),
                Box::new(move |t| s1.fast(t)),
                Box::new(move |t| s2.reference(t)),
            )
        })
        .collect()
}

/// Flash-attention gradients on the GPU (f32, bf16) against candle autograd through
/// `sdpa_reference` on the CPU: dq, dk, dv of `sum(out · g)` for a random upstream g.
/// `suffix` tags the report lines.
fn flash_grad_checks(dev: &Device, dtypes: &[DType], suffix: &str) -> Result<usize> {
    let mut failures = 0;
    for spec in [
        ATTN_SPECS[0],
        ATTN_SPECS[1],
        ATTN_SPECS[3],
        ATTN_SPECS[4],
        ATTN_SPECS[2],
    ] {
        for &dtype in dtypes {
            let inputs = spec.inputs();
            let host: Vec<Tensor> = inputs
                .iter()
                .map(|i| make(i)?.to_dtype(dtype)?.to_dtype(DType::F32))
                .collect::<Result<_>>()?;
            let g_shape = (spec.b, spec.h, spec.lq, spec.d);
            let g = Tensor::randn(0f32, 1.0, g_shape, &Device::Cpu)?
                .to_dtype(dtype)?
                .to_dtype(DType::F32)?;
            // The bias (last input when present) is a constant; the rest are variables.
            let n_vars = match spec.bias {
                AttnBias::None => host.len(),
                _ => host.len() - 1,
            };
            let grads = |d: &Device, dt: DType, fast: bool| -> Result<Vec<Option<Tensor>>> {
                let vars: Vec<Var> = host[..n_vars]
                    .iter()
                    .map(|t| Var::from_tensor(&t.to_dtype(dt)?.to_device(d)?))
                    .collect::<Result<_>>()?;
                let mut t: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
                for b in &host[n_vars..] {
                    t.push(b.to_dtype(dt)?.to_device(d)?);
                }
                if fast {
                    poison(d)?;
                }
                let out = if fast {
                    spec.fast(&t)?
                } else {
                    spec.reference(&t)?
                };
                let loss = (out.to_dtype(DType::F32)? * g.to_device(d)?)?.sum_all()?;
                let store = loss.backward()?;
                Ok(vars
                    .iter()
                    .map(|v| store.get(v.as_tensor()).cloned())
                    .collect())
            };
            let reference = grads(&Device::Cpu, DType::F32, false)?;
            let gpu = match grads(dev, dtype, true) {
                Ok(g) => g,
                Err(e) => {
                    println!("CHECK {} grad{suffix} {:?} FAIL {e}", spec.name, dtype);
                    failures += 1;
                    continue;
                }
            };
            let names: &[&str] = if n_vars == 1 {
                &["dqkv"]
            } else {
                &["dq", "dk", "dv"]
            };
            for (i, name) in names.iter().enumerate() {
                let (err, nan) = match (&gpu[i], &reference[i]) {
                    (Some(gg), Some(r)) => rel_err(gg, r)?,
                    _ => (f64::INFINITY, 0),
                };
                let tol = if dtype == DType::F32 { 1e-5 } else { 1e-2 };
                let ok = err <= tol && nan == 0;
                failures += usize::from(!ok);
                println!(
                    "CHECK {:<31} {:<5} rel_err {err:.2e} (tol {tol:.0e}) nan {nan} {}",
                    format!("{} {name}{suffix}", spec.name),
                    format!("{dtype:?}").to_lowercase(),
                    if ok { "ok" } else { "FAIL" }
                );
            }
        }
    }
    Ok(failures)
}

/// The LoRA layer through `nn::Linear` (fast) or written out with candle primitives.
fn lora_linear(t: &[Tensor], fast: bool) -> Result<Tensor> {
    if !fast {
        let base = t[0].broadcast_matmul(&t[1].t()?)?;
        let a = t[0]
            .to_dtype(DType::F32)?
            .broadcast_matmul(&t[2].to_dtype(DType::F32)?.t()?)?;
        let delta = (a.broadcast_matmul(&t[3].to_dtype(DType::F32)?.t()?)? * 2.0)?;
        let dtype = base.dtype();
        return base + delta.to_dtype(dtype)?;
    }
    let mut l = Linear::new(t[1].clone(), None);
    let (a, b) = (
        Var::from_tensor(&t[2].to_dtype(DType::F32)?)?,
        Var::from_tensor(&t[3].to_dtype(DType::F32)?)?,
    );
    l.set_lora(LoraAdapter::new(
        a,
        b,
        2.0,
        0.0,
        std::sync::Arc::new(LoraMode::new(0)),
    ))
    .map_err(|e| wick::candle_core::Error::Msg(e.to_string()))?;
    wick::candle_core::Module::forward(&l, &t[0])
}

/// One case in one dtype: (passed, the report line's tail).
fn check_one(c: &Case, dtype: DType, dev: &Device) -> Result<(bool, String)> {
    let host: Vec<Tensor> = c
        .inputs
        .iter()
        .map(|i| make(i)?.to_dtype(dtype)?.to_dtype(DType::F32))
        .collect::<Result<_>>()?;
    let refs: Vec<Tensor> = host
        .iter()
        .zip(&c.inputs)
        .map(|(t, i)| view(t, i))
        .collect::<Result<_>>()?;
    let reference = (c.reference)(&refs)?;
    let gpu: Vec<Tensor> = host
        .iter()
        .zip(&c.inputs)
        .map(|(t, i)| view(&t.to_dtype(dtype)?.to_device(dev)?, i))
        .collect::<Result<_>>()?;
    poison(dev)?;
    let out = (c.fast)(&gpu)?;
    if out.dims() != reference.dims() {
        candle_core::bail!("shape {:?} vs {:?}", out.dims(), reference.dims())
    }
    let (err, nan) = rel_err(&out, &reference)?;
    let tol = if dtype == DType::F32 { 1e-5 } else { 1e-2 };
    let ok = err <= tol && nan == 0;
    let verdict = if ok { "ok" } else { "FAIL" };
    Ok((
        ok,
        format!("rel_err {err:.2e} (tol {tol:.0e}) nan {nan} {verdict}"),
    ))
}

/// Runs every case in every dtype; prints one line each and returns the number of failures.
pub fn run_all(dev: &Device) -> Result<usize> {
    let mut failures = 0;
    for c in cases() {
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let line = match check_one(&c, dtype, dev) {
                Ok(line) => line,
                Err(e) => (false, format!("rel_err inf nan 0 FAIL {e}")),
            };
            failures += usize::from(!line.0);
            println!(
                "CHECK {:<31} {:<5} {}",
                c.name,
                format!("{dtype:?}").to_lowercase(),
                line.1
            );
        }
    }
    failures += lora_grad_check(dev)?;
    failures += adamw_check(dev)?;
    failures += minilm_check(dev)?;
    for c in grad_cases() {
        for dtype in [DType::F32, DType::BF16] {
            let line = match check_grad(&c, dtype, dev) {
                Ok(line) => line,
                Err(e) => (false, format!("rel_err inf nan 0 FAIL {e}")),
            };
            failures += usize::from(!line.0);
            println!(
                "CHECK {:<31} {:<5} {}",
                format!("grad {}", c.name),
                format!("{dtype:?}").to_lowercase(),
                line.1
            );
        }
    }
    failures += flash_grad_checks(dev, &[DType::F32, DType::BF16], "")?;
    // f16/bf16 flash attention runs on tensor cores by default; check the CUDA-core kernels on
    // bf16 too.
    std::env::set_var("WICK_FLASH_FP32", "1");
    for c in attn_cases() {
        let line = match check_one(&c, DType::BF16, dev) {
            Ok(line) => line,
            Err(e) => (false, format!("rel_err inf nan 0 FAIL {e}")),
        };
        failures += usize::from(!line.0);
        println!("CHECK {:<31} bf16  {}", format!("{} cc", c.name), line.1);
    }
    failures += flash_grad_checks(dev, &[DType::BF16], " cc")?;
    std::env::remove_var("WICK_FLASH_FP32");
    Ok(failures)
}

/// Backward passes training uses: the gradient of Σ out·u (u random) with respect to input 0
/// (and input 1 where `both`), GPU fast path in `dtype` against the CPU reference in f32.
struct GradCase {
    name: &'static str,
    inputs: Vec<Input>,
    both: bool,
    fast: OpFn,
    reference: OpFn,
}

fn grad_cases() -> Vec<GradCase> {
    let n = |s: f32| Kind::Normal(s);
    let targets = |rows: usize, vocab: usize| -> Vec<u32> {
        (0..rows)
            .map(|i| ((i * 7919 + 13) % vocab) as u32)
            .collect()
    };
    vec![
        GradCase {
            name: "rms_norm",
            inputs: vec![
                input(&[5, 37, 897], n(3.0), true),
                input(&[897], n(1.0), false),
            ],
            both: false,
            fast: Box::new(|t| ops::rms_norm::rms_norm(&t[0], &t[1], 1e-6)),
            reference: Box::new(|t| ops::rms_norm::rms_norm_reference(&t[0], &t[1], 1e-6)),
        },
        GradCase {
            name: "rope",
            inputs: vec![
                input(&[2, 7, 14, 64], n(1.0), false),
                input(&[2, 7, 32], n(1.0), false),
                input(&[2, 7, 32], n(1.0), false),
            ],
            both: false,
            fast: Box::new(|t| ops::rope::rope(&t[0].transpose(1, 2)?, &t[1], &t[2])),
            reference: Box::new(|t| {
                ops::rope::rope_reference(&t[0].transpose(1, 2)?, &t[1], &t[2])
            }),
        },
        GradCase {
            name: "softmax",
            inputs: vec![input(&[4, 13, 1031], n(4.0), false)],
            both: false,
            fast: Box::new(|t| ops::softmax::softmax_last_dim(&t[0])),
            reference: Box::new(|t| ops::softmax::softmax_last_dim_reference(&t[0])),
        },
        GradCase {
            name: "swiglu",
            inputs: vec![
                input(&[3, 7, 4865], n(3.0), true),
                input(&[3, 7, 4865], n(1.0), false),
            ],
            both: true,
            fast: Box::new(|t| ops::swiglu::swiglu(&t[0], &t[1])),
            reference: Box::new(|t| ops::swiglu::swiglu_reference(&t[0], &t[1])),
        },
        GradCase {
            name: "frozen matmul",
            inputs: vec![
                input(&[3, 41, 897], n(1.0), false),
                input(&[1153, 897], n(0.05), false),
            ],
            both: false,
            fast: Box::new(|t| {
                let x = t[0].reshape((123, 897))?;
                let w = ops::frozen_matmul::FrozenWeight::Dense(t[1].clone());
                ops::frozen_matmul::frozen_matmul(&x, &w)
            }),
            reference: Box::new(|t| t[0].reshape((123, 897))?.matmul(&t[1].t()?)),
        },
        GradCase {
            name: "cross_entropy",
            inputs: vec![input(&[37, 50_001], n(3.0), false)],
            both: false,
            fast: Box::new(move |t| {
                ops::cross_entropy::cross_entropy_sum(&t[0], &targets(37, 50_001))?.reshape(1)
            }),
            reference: Box::new(move |t| {
                ops::cross_entropy::cross_entropy_sum_reference(&t[0], &targets(37, 50_001))?
                    .reshape(1)
            }),
        },
    ]
}

/// The gradients of the tracked inputs of `f` on `inputs` (on their device) for Σ f·u.
fn grads_of(f: &OpFn, inputs: &[Tensor], both: bool, u: &Tensor) -> Result<Vec<Tensor>> {
    let tracked = if both { 2 } else { 1 };
    let vars: Vec<Var> = inputs[..tracked]
        .iter()
        .map(Var::from_tensor)
        .collect::<Result<_>>()?;
    let mut args: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    args.extend(inputs[tracked..].iter().cloned());
    let out = f(&args)?;
    let u = u.to_device(out.device())?.reshape(out.shape())?;
    let store = (out.to_dtype(DType::F32)? * u)?.sum_all()?.backward()?;
    vars.iter()
        .map(|v| match store.get(v.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => candle_core::bail!("no gradient reached an input"),
        })
        .collect()
}

fn check_grad(c: &GradCase, dtype: DType, dev: &Device) -> Result<(bool, String)> {
    let host: Vec<Tensor> = c
        .inputs
        .iter()
        .map(|i| make(i)?.to_dtype(dtype)?.to_dtype(DType::F32))
        .collect::<Result<_>>()?;
    let views = |d: &Device, dt: DType| -> Result<Vec<Tensor>> {
        host.iter()
            .zip(&c.inputs)
            .map(|(t, i)| view(&t.to_dtype(dt)?.to_device(d)?, i))
            .collect()
    };
    let out_shape = (c.reference)(&views(&Device::Cpu, DType::F32)?)?
        .shape()
        .clone();
    let u = Tensor::randn(0f32, 1.0, out_shape, &Device::Cpu)?;
    let expected = grads_of(&c.reference, &views(&Device::Cpu, DType::F32)?, c.both, &u)?;
    poison(dev)?;
    let got = grads_of(&c.fast, &views(dev, dtype)?, c.both, &u)?;
    let (mut worst, mut nans) = (0f64, 0);
    for (g, e) in got.iter().zip(&expected) {
        if g.dims() != e.dims() {
            candle_core::bail!("gradient shape {:?} vs {:?}", g.dims(), e.dims())
        }
        let (err, nan) = rel_err(g, e)?;
        worst = worst.max(err);
        nans += nan;
    }
    let tol = if dtype == DType::F32 { 1e-5 } else { 1e-2 };
    let ok = worst <= tol && nans == 0;
    let verdict = if ok { "ok" } else { "FAIL" };
    Ok((
        ok,
        format!("rel_err {worst:.2e} (tol {tol:.0e}) nan {nans} {verdict}"),
    ))
}

/// LoRA gradients (A, B and a tracked input x) on the GPU against the CPU in f32: what
/// training depends on. The base weight and x in f32 and in bf16 (A and B stay f32).
fn lora_grad_check(dev: &Device) -> Result<usize> {
    let x = Tensor::randn(0f32, 1.0, (4, 19, 129), &Device::Cpu)?;
    let w = Tensor::randn(0f32, 0.05, (77, 129), &Device::Cpu)?;
    let a = Tensor::randn(0f32, 0.1, (8, 129), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 0.1, (77, 8), &Device::Cpu)?;
    let u = Tensor::randn(0f32, 1.0, (4, 19, 77), &Device::Cpu)?;
    // Inputs rounded to `dtype`, then computed in `compute` on `d`.
    let grads = |d: &Device, dtype: DType, compute: DType| -> Result<Vec<Tensor>> {
        let round = |t: &Tensor| t.to_dtype(dtype)?.to_dtype(compute)?.to_device(d);
        let mut l = Linear::new(round(&w)?, None);
        let (va, vb) = (
            Var::from_tensor(&a.to_device(d)?)?,
            Var::from_tensor(&b.to_device(d)?)?,
        );
        let mode = std::sync::Arc::new(LoraMode::new(0));
        mode.set_requires_grad(true);
        l.set_lora(LoraAdapter::new(va.clone(), vb.clone(), 2.0, 0.0, mode))
            .map_err(|e| wick::candle_core::Error::Msg(e.to_string()))?;
        let vx = Var::from_tensor(&round(&x)?)?;
        let y = wick::candle_core::Module::forward(&l, vx.as_tensor())?;
        let store = (y.to_dtype(DType::F32)? * u.to_device(d)?)?
            .sum_all()?
            .backward()?;
        [&va, &vb, &vx]
            .iter()
            .map(|v| match store.get(v.as_tensor()) {
                Some(g) => Ok(g.clone()),
                None => candle_core::bail!("no LoRA gradient"),
            })
            .collect()
    };
    let mut failures = 0;
    for dtype in [DType::F32, DType::BF16] {
        // The CPU reference sees the same rounded inputs, in f32.
        let expected = grads(&Device::Cpu, dtype, DType::F32);
        let (expected, got) = match (expected, grads(dev, dtype, dtype)) {
            (Ok(e), Ok(g)) => (e, g),
            (Err(e), _) | (_, Err(e)) => {
                failures += 1;
                println!("CHECK lora grads          {dtype:?} FAIL {e}");
                continue;
            }
        };
        for (name, (g, e)) in ["grad A", "grad B", "grad x"]
            .iter()
            .zip(got.iter().zip(&expected))
        {
            let (err, nan) = rel_err(g, e)?;
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-2 };
            let ok = err <= tol && nan == 0;
            failures += usize::from(!ok);
            println!(
                "CHECK lora {name:<19} {:<5} rel_err {err:.2e} (tol {tol:.0e}) nan {nan} {}",
                format!("{dtype:?}").to_lowercase(),
                if ok { "ok" } else { "FAIL" }
            );
        }
    }
    Ok(failures)
}

/// Three AdamW steps (weight decay on, odd sizes) with the CUDA kernels against the CPU
/// optimizer on the same parameters and gradients: parameters and both moments.
fn adamw_check(dev: &Device) -> Result<usize> {
    use wick::train::optim::{AdamW, AdamWParams};
    let shapes = [vec![16usize, 897], vec![4865, 16], vec![3]];
    let init: Vec<Tensor> = shapes
        .iter()
        .map(|s| Tensor::randn(0f32, 0.1, s.as_slice(), &Device::Cpu))
        .collect::<Result<_>>()?;
    let grads: Vec<Vec<Tensor>> = (0..3)
        .map(|_| {
            shapes
                .iter()
                .map(|s| Tensor::randn(0f32, 1.0, s.as_slice(), &Device::Cpu))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    let params = AdamWParams {
        weight_decay: 0.01,
        ..AdamWParams::default()
    };
    let run = |d: &Device| -> Result<(Vec<Tensor>, std::collections::HashMap<String, Tensor>)> {
        let vars: Vec<(String, Var)> = init
            .iter()
            .enumerate()
            .map(|(i, t)| Ok((format!("p{i}"), Var::from_tensor(&t.to_device(d)?)?)))
            .collect::<Result<_>>()?;
        let mut opt = AdamW::new(vars.clone(), params)
            .map_err(|e| wick::candle_core::Error::Msg(e.to_string()))?;
        for (step, g) in grads.iter().enumerate() {
            let g: Vec<Tensor> = g.iter().map(|t| t.to_device(d)).collect::<Result<_>>()?;
            opt.step(&g, 1e-3 * (step + 1) as f64)
                .map_err(|e| wick::candle_core::Error::Msg(e.to_string()))?;
        }
        let ps = vars.iter().map(|(_, v)| v.as_tensor().clone()).collect();
        Ok((ps, opt.state_tensors()))
    };
    let ((p_cpu, s_cpu), (p_gpu, s_gpu)) = (run(&Device::Cpu)?, run(dev)?);
    let mut worst = 0f64;
    let mut nans = 0;
    for (g, c) in p_gpu.iter().zip(&p_cpu) {
        let (err, nan) = rel_err(g, c)?;
        worst = worst.max(err);
        nans += nan;
    }
    for (k, c) in &s_cpu {
        let Some(g) = s_gpu.get(k) else {
            candle_core::bail!("AdamW state {k} missing on the GPU")
        };
        let (err, nan) = rel_err(g, c)?;
        worst = worst.max(err);
        nans += nan;
    }
    let ok = worst <= 1e-5 && nans == 0;
    println!(
        "CHECK adamw 3 steps (p, m, v) f32   rel_err {worst:.2e} (tol 1e-5) nan {nans} {}",
        if ok { "ok" } else { "FAIL" }
    );
    Ok(usize::from(!ok))
}

/// The whole MiniLM-shaped encoder on right-padded texts (fused embeddings, LayerNorm kernels,
/// flash attention with a padding bias, residual GEMMs, erf-GELU, masked mean pooling) on the
/// GPU against the CPU model with the same random weights, in f32: pooled, normalised embeddings.
fn minilm_check(dev: &Device) -> Result<usize> {
    use wick::embed::pooling::{l2_normalize, pool};
    use wick::embed::PoolingMode;
    let src = crate::random::RandomWeights::new(dev);
    let lengths = [23u32, 17, 5, 11];
    let seq = 23usize;
    let ids: Vec<u32> = (0..lengths.len() * seq)
        .map(|i| ((i * 7919 + 101) % 30_000) as u32)
        .collect();
    let mask: Vec<u32> = (0..lengths.len() * seq)
        .map(|i| u32::from((i % seq) < lengths[i / seq] as usize))
        .collect();
    let embed = |d: &Device, dtype: DType| -> Result<Tensor> {
        let msg = |e: wick::Error| candle_core::Error::Msg(e.to_string());
        let model = crate::random::minilm(&src, dtype, d).map_err(msg)?;
        let ids = Tensor::from_vec(ids.clone(), (lengths.len(), seq), d)?;
        let mask = Tensor::from_vec(mask.clone(), (lengths.len(), seq), d)?;
        let h = model.forward(&ids, &mask).map_err(msg)?;
        l2_normalize(&pool(&h, &mask, &[PoolingMode::Mean]).map_err(msg)?).map_err(msg)
    };
    let expected = embed(&Device::Cpu, DType::F32)?;
    let mut failures = 0;
    for dtype in [DType::F32, DType::BF16] {
        poison(dev)?;
        let (err, nan) = rel_err(&embed(dev, dtype)?, &expected)?;
        let tol = if dtype == DType::F32 { 1e-5 } else { 1e-2 };
        let ok = err <= tol && nan == 0;
        failures += usize::from(!ok);
        println!(
            "CHECK {:<31} {:<5} rel_err {err:.2e} (tol {tol:.0e}) nan {nan} {}",
            "minilm padded texts (pooled)",
            format!("{dtype:?}").to_lowercase(),
            if ok { "ok" } else { "FAIL" }
        );
    }
    Ok(failures)
}
