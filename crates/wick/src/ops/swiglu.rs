//! SwiGLU gate of the Llama MLP: `silu(gate) · up`.

use candle_core::{DType, Result, Tensor};

use super::grad::with_backward2;

/// Fast path: candle's fused silu times `up`. When tracked (LoRA training) the product is
/// recorded with its analytic backward, so the graph keeps gate, up and the output, not the
/// intermediate silu(gate) as well.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if !(gate.track_op() || up.track_op()) {
        return gate.silu()? * up;
    }
    let y = (gate.detach().silu()? * up.detach())?;
    with_backward2(gate, up, y, Box::new(|args, _, g| swiglu_backward(args, g)))
}

/// With s = sigmoid(gate): d/dup = g·gate·s, d/dgate = g·up·s·(1 + gate·(1 − s)); in f32.
fn swiglu_backward(args: &[&Tensor], g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let [gate, up] = args else {
        candle_core::bail!("swiglu backward: {} inputs, 2 expected", args.len())
    };
    #[cfg(feature = "cuda")]
    {
        use super::cuda::elementwise::{fits, swiglu_backward};
        let (gate, up, g) = (gate.detach(), up.detach(), g.detach());
        if gate.dtype() == up.dtype() && fits(&gate) && fits(&up) && fits(&g) {
            let (d_gate, d_up) = swiglu_backward(&gate, &up, &g.to_dtype(gate.dtype())?)?;
            return Ok(vec![Some(d_gate), Some(d_up)]);
        }
    }
    let g32 = g.to_dtype(DType::F32)?;
    let x = gate.detach().to_dtype(DType::F32)?;
    let s = (x.neg()?.exp()? + 1.0)?.recip()?;
    let d_up = match up.track_op() {
        true => Some((&g32 * (&x * &s)?)?.to_dtype(up.dtype())?),
        false => None,
    };
    let d_gate = match gate.track_op() {
        true => {
            let slope = ((&x * (1.0 - &s)?)? + 1.0)?;
            let u = up.detach().to_dtype(DType::F32)?;
            Some((((g32 * u)? * s)? * slope)?.to_dtype(gate.dtype())?)
        }
        false => None,
    };
    Ok(vec![d_gate, d_up])
}

/// Reference: `gate · sigmoid(gate) · up` from exp and arithmetic.
pub fn swiglu_reference(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let sigmoid = (gate.neg()?.exp()? + 1.0)?.recip()?;
    (gate * sigmoid)? * up
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn fast_matches_reference_on_odd_sizes_and_non_contiguous_input() -> Result<()> {
        let dev = Device::Cpu;
        let gate = Tensor::randn(0f32, 4.0, (3, 13, 5), &dev)?.transpose(1, 2)?;
        let up = Tensor::randn(0f32, 1.0, (3, 5, 13), &dev)?;
        let diff = (swiglu(&gate, &up)? - swiglu_reference(&gate, &up)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "max abs diff {diff}");
        let half = swiglu(&gate.to_dtype(DType::BF16)?, &up.to_dtype(DType::BF16)?)?;
        assert_eq!(half.dtype(), DType::BF16);
        Ok(())
    }

    #[test]
    fn analytic_gradients_match_the_reference_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let gate = candle_core::Var::from_tensor(&Tensor::randn(0f32, 3.0, (4, 19), &dev)?)?;
        let up = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 19), &dev)?)?;
        let w = Tensor::randn(0f32, 1.0, (4, 19), &dev)?;
        let grads = |f: fn(&Tensor, &Tensor) -> Result<Tensor>| -> Result<(Tensor, Tensor)> {
            let g = (f(gate.as_tensor(), up.as_tensor())? * &w)?
                .sum_all()?
                .backward()?;
            let get = |v: &candle_core::Var| g.get(v.as_tensor()).expect("gradient").clone();
            Ok((get(&gate), get(&up)))
        };
        let ((g1, u1), (g2, u2)) = (grads(swiglu)?, grads(swiglu_reference)?);
        let d = |a: &Tensor, b: &Tensor| -> Result<f32> {
            (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
        };
        let (dg, du) = (d(&g1, &g2)?, d(&u1, &u2)?);
        assert!(
            dg < 1e-5 && du < 1e-5,
            "gate grad diff {dg}, up grad diff {du}"
        );
        Ok(())
    }
}
