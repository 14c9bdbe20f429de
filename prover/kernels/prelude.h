/* The thin macro layer that lets one kernel source compile as OpenCL C and as
 * CUDA C++ (NVRTC). The Rust side puts `#define MEDROLLUP_CUDA` (or nothing,
 * for OpenCL) in front of this file.
 *
 * Rules the rest of the source keeps, so that it is valid in both dialects:
 * - helpers are DEVICE functions (DEVICE_NOINLINE for the large curve
 *   formulas, which would otherwise be copied into every kernel) that take
 *   and return values (structs by value), or GLOBAL pointers, never
 *   unqualified ones (OpenCL 1.2 has no generic address space);
 * - kernels are KERNEL functions whose pointer arguments are GLOBAL;
 * - work-group memory is declared at the top of a kernel with LOCAL;
 * - no C++-only and no C-only syntax (no designated initialisers, no
 *   references, no templates: the Rust side instantiates templates by
 *   substituting names). */

#ifdef MEDROLLUP_CUDA
typedef unsigned int u32;
typedef unsigned long long u64;
#define KERNEL extern "C" __global__
#define DEVICE static __device__ __forceinline__
#define DEVICE_NOINLINE static __device__ __noinline__
#define GLOBAL
#define LOCAL __shared__
#define CONSTANT __constant__
#define BARRIER() __syncthreads()
#define GLOBAL_ID() (blockIdx.x * blockDim.x + threadIdx.x)
#define LOCAL_ID() (threadIdx.x)
#define GROUP_ID() (blockIdx.x)
#define GROUP_SIZE() (blockDim.x)
#define ATOMIC_INC(p) atomicAdd((p), 1u)
#define ATOMIC_OR(p, v) atomicOr((p), (v))
#define MUL_HI(a, b) __umulhi((a), (b))
#define ALIGN16 __align__(16)
#else
typedef uint u32;
typedef ulong u64;
#define KERNEL __kernel
#define DEVICE static inline
#define DEVICE_NOINLINE static
#define GLOBAL __global
#define LOCAL __local
#define CONSTANT __constant
#define BARRIER() barrier(CLK_LOCAL_MEM_FENCE)
#define GLOBAL_ID() ((u32)get_global_id(0))
#define LOCAL_ID() ((u32)get_local_id(0))
#define GROUP_ID() ((u32)get_group_id(0))
#define GROUP_SIZE() ((u32)get_local_size(0))
#define ATOMIC_INC(p) atomic_inc(p)
#define ATOMIC_OR(p, v) atomic_or((p), (v))
#define MUL_HI(a, b) mul_hi((a), (b))
#define ALIGN16 __attribute__((aligned(16)))
#endif

/* The PTX carry-chain fast paths are used on CUDA unless the Rust side asks
 * for the portable code (to compare the two). */
#if defined(MEDROLLUP_CUDA) && !defined(MEDROLLUP_PORTABLE)
#define MEDROLLUP_PTX 1
#endif
