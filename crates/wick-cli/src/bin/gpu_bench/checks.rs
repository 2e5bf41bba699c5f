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
    v
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
                "CHECK {:<24} {:<5} {}",
                c.name,
                format!("{dtype:?}").to_lowercase(),
                line.1
            );
        }
    }
    failures += lora_grad_check(dev)?;
    failures += adamw_check(dev)?;
    for c in grad_cases() {
        for dtype in [DType::F32, DType::BF16] {
            let line = match check_grad(&c, dtype, dev) {
                Ok(line) => line,
                Err(e) => (false, format!("rel_err inf nan 0 FAIL {e}")),
            };
            failures += usize::from(!line.0);
            println!(
                "CHECK {:<24} {:<5} {}",
                format!("grad {}", c.name),
                format!("{dtype:?}").to_lowercase(),
                line.1
            );
        }
    }
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
