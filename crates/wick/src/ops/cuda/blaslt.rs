//! GEMM through cuBLASLt: `D = X·Wᵀ (+ bias) (+ C)` for row-major X (rows × k), W (n × k) and
//! D/C (rows × n), in f32/f16/bf16 with f32 accumulation (no tf32 unless asked).
//!
//! Every cuBLASLt object lives in an RAII wrapper that destroys it on drop. A plan (descriptor,
//! three layouts and the algorithm picked by cuBLASLt's heuristic) is built once per shape and
//! cached; a call then only sets the bias pointer and enqueues the matmul on the device's
//! stream: no host synchronisation, no allocation, so calls can also be captured in a CUDA
//! graph. The workspace is allocated once per device.

use std::collections::HashMap;
use std::ffi::c_void;
use std::mem::size_of;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{DType, Result};
use cudarc::cublaslt::{result as lt, sys};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};

fn err(what: &str, e: impl std::fmt::Debug) -> candle_core::Error {
    candle_core::Error::Cuda(format!("cuBLASLt {what}: {e:?}").into())
}

struct Handle(sys::cublasLtHandle_t);
impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtCreate and destroyed exactly once, here.
        let _ = unsafe { lt::destroy_handle(self.0) };
    }
}

struct Layout(sys::cublasLtMatrixLayout_t);
impl Layout {
    fn new(dtype: sys::cudaDataType, rows: u64, cols: u64, ld: i64) -> Result<Self> {
        lt::create_matrix_layout(dtype, rows, cols, ld)
            .map(Layout)
            .map_err(|e| err("layout", e))
    }
}
impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtMatrixLayoutCreate, destroyed once.
        let _ = unsafe { lt::destroy_matrix_layout(self.0) };
    }
}

struct Desc(sys::cublasLtMatmulDesc_t);
impl Desc {
    fn set<T>(&self, attr: sys::cublasLtMatmulDescAttributes_t, value: &T) -> Result<()> {
        // SAFETY: `value` is the attribute's documented type and lives through the call.
        unsafe {
            lt::set_matmul_desc_attribute(
                self.0,
                attr,
                value as *const T as *const c_void,
                size_of::<T>(),
            )
        }
        .map_err(|e| err("descriptor attribute", e))
    }
}
impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtMatmulDescCreate, destroyed once.
        let _ = unsafe { lt::destroy_matmul_desc(self.0) };
    }
}

struct Pref(sys::cublasLtMatmulPreference_t);
impl Drop for Pref {
    fn drop(&mut self) {
        // SAFETY: created by cublasLtMatmulPreferenceCreate, destroyed once.
        let _ = unsafe { lt::destroy_matmul_pref(self.0) };
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct PlanKey {
    rows: usize,
    n: usize,
    k: usize,
    dtype: DType,
    bias: bool,
    accumulate: bool,
    tf32: bool,
}

struct Plan {
    desc: Desc,
    a: Layout,
    b: Layout,
    c: Layout,
    algo: sys::cublasLtMatmulAlgo_t,
}

/// One cuBLASLt handle, workspace and plan cache per device stream.
pub struct BlasLt {
    handle: Handle,
    workspace: CudaSlice<u8>,
    stream: Arc<CudaStream>,
    plans: Mutex<HashMap<PlanKey, Arc<Plan>>>,
    /// Serialises set-bias-then-enqueue on a shared plan.
    call: Mutex<()>,
}

// SAFETY: the raw cuBLASLt handles are only used behind this struct, with plan creation under
// a mutex; cuBLASLt handles may be used from any thread as long as calls don't race on one
// stream, and every call goes to this device's single stream.
unsafe impl Send for BlasLt {}
unsafe impl Sync for BlasLt {}
unsafe impl Send for Plan {}
unsafe impl Sync for Plan {}

/// cublasOperation_t values (CUBLAS_OP_N, CUBLAS_OP_T), which cudarc's cublaslt bindings don't
/// re-export.
const OP_N: i32 = 0;
const OP_T: i32 = 1;

/// 32 MiB, NVIDIA's recommendation for Hopper.
const WORKSPACE_BYTES: usize = 32 << 20;

fn registry() -> &'static Mutex<HashMap<usize, Arc<BlasLt>>> {
    static R: OnceLock<Mutex<HashMap<usize, Arc<BlasLt>>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Operand description of one GEMM, by raw device pointers on `BlasLt`'s stream.
pub struct Gemm {
    pub rows: usize,
    pub n: usize,
    pub k: usize,
    pub dtype: DType,
    pub x: u64,
    pub w: u64,
    /// Length-n bias added to every row (fused epilogue).
    pub bias: Option<u64>,
    /// When set, D = X·Wᵀ + C with C at this pointer (may equal `d`: an in-place residual add).
    pub accumulate: Option<u64>,
    pub d: u64,
    /// Allow tf32 for f32 inputs (off unless asked).
    pub tf32: bool,
}

fn cuda_type(dtype: DType) -> Result<sys::cudaDataType> {
    Ok(match dtype {
        DType::F32 => sys::cudaDataType::CUDA_R_32F,
        DType::F16 => sys::cudaDataType::CUDA_R_16F,
        DType::BF16 => sys::cudaDataType::CUDA_R_16BF,
        d => candle_core::bail!("cuBLASLt GEMM: unsupported dtype {d:?}"),
    })
}

impl BlasLt {
    /// The instance for `stream`'s device (created on first use).
    pub fn for_stream(stream: &Arc<CudaStream>) -> Result<Arc<BlasLt>> {
        let ordinal = stream.context().ordinal();
        let mut reg = registry().lock().map_err(|_| err("registry", "poisoned"))?;
        if let Some(b) = reg.get(&ordinal) {
            return Ok(b.clone());
        }
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| err("bind", e))?;
        let handle = Handle(lt::create_handle().map_err(|e| err("create", e))?);
        // SAFETY: scratch space, never read before cuBLASLt writes it.
        let workspace =
            unsafe { stream.alloc::<u8>(WORKSPACE_BYTES) }.map_err(|e| err("workspace", e))?;
        let b = Arc::new(BlasLt {
            handle,
            workspace,
            stream: stream.clone(),
            plans: Mutex::new(HashMap::new()),
            call: Mutex::new(()),
        });
        reg.insert(ordinal, b.clone());
        Ok(b)
    }

    fn plan(&self, key: PlanKey) -> Result<Arc<Plan>> {
        let mut plans = self.plans.lock().map_err(|_| err("plans", "poisoned"))?;
        if let Some(p) = plans.get(&key) {
            return Ok(p.clone());
        }
        let ty = cuda_type(key.dtype)?;
        let compute = if key.dtype == DType::F32 && key.tf32 {
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
        } else {
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F
        };
        let desc = Desc(
            lt::create_matmul_desc(compute, sys::cudaDataType::CUDA_R_32F)
                .map_err(|e| err("descriptor", e))?,
        );
        // Column-major view: Dᵀ (n × rows) = W (n × k, stored as k × n: transposed) · Xᵀ.
        let (n, k, rows) = (key.n as u64, key.k as u64, key.rows as u64);
        desc.set(
            sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
            &OP_T,
        )?;
        desc.set(
            sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB,
            &OP_N,
        )?;
        let epilogue = if key.bias {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS
        } else {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT
        };
        desc.set(
            sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_EPILOGUE,
            &(epilogue as u32),
        )?;
        if key.bias {
            desc.set(
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                &(ty as u32),
            )?;
        }
        let a = Layout::new(ty, k, n, k as i64)?;
        let b = Layout::new(ty, k, rows, k as i64)?;
        let c = Layout::new(ty, n, rows, n as i64)?;
        let pref = Pref(lt::create_matmul_pref().map_err(|e| err("preference", e))?);
        // SAFETY: the documented u64 attribute.
        unsafe {
            lt::set_matmul_pref_attribute(
                pref.0,
                sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                &(WORKSPACE_BYTES as u64) as *const u64 as *const c_void,
                size_of::<u64>(),
            )
        }
        .map_err(|e| err("preference attribute", e))?;
        // SAFETY: all descriptors are live for the call.
        let heuristic = unsafe {
            lt::get_matmul_algo_heuristic(self.handle.0, desc.0, a.0, b.0, c.0, c.0, pref.0)
        }
        .map_err(|e| err(&format!("no algorithm for {key:?}"), e))?;
        let plan = Arc::new(Plan {
            desc,
            a,
            b,
            c,
            algo: heuristic.algo,
        });
        plans.insert(key, plan.clone());
        Ok(plan)
    }

    /// Builds (and caches) the plan `g` will use, so a later [`BlasLt::gemm`] does no setup:
    /// done before a CUDA graph capture.
    pub fn prepare(&self, g: &Gemm) -> Result<()> {
        self.plan(Self::key(g)).map(|_| ())
    }

    fn key(g: &Gemm) -> PlanKey {
        PlanKey {
            rows: g.rows,
            n: g.n,
            k: g.k,
            dtype: g.dtype,
            bias: g.bias.is_some(),
            accumulate: g.accumulate.is_some(),
            tf32: g.tf32,
        }
    }

    /// Enqueues one GEMM on the stream.
    ///
    /// # Safety
    /// Every pointer must address live device memory of this device holding at least the
    /// elements the shapes say, in `g.dtype`, and stay alive until the stream has run the call.
    pub unsafe fn gemm(&self, g: &Gemm) -> Result<()> {
        let plan = self.plan(Self::key(g))?;
        let _serial = self.call.lock().map_err(|_| err("call", "poisoned"))?;
        if let Some(bias) = g.bias {
            plan.desc.set(
                sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                &bias,
            )?;
        }
        let (alpha, beta) = (1f32, if g.accumulate.is_some() { 1f32 } else { 0f32 });
        let c = g.accumulate.unwrap_or(g.d);
        let (ws, _guard) = self.workspace.device_ptr(&self.stream);
        // SAFETY: pointers per this function's contract; plan objects are live.
        unsafe {
            lt::matmul(
                self.handle.0,
                plan.desc.0,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                g.w as *const c_void,
                plan.a.0,
                g.x as *const c_void,
                plan.b.0,
                c as *const c_void,
                plan.c.0,
                g.d as *mut c_void,
                plan.c.0,
                &plan.algo,
                ws as *mut c_void,
                WORKSPACE_BYTES,
                self.stream.cu_stream() as sys::cudaStream_t,
            )
        }
        .map_err(|e| err("matmul", e))
    }
}
