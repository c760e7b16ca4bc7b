// sparq - fast, compressed LLM inference for Node.js. Public entry point.
import { loadNative } from './native';

export { Tensor, Rng, type DType, type Device, type RandOptions, f16ToF32, f32ToF16, bf16ToF32, f32ToBf16 } from './tensor';
export {
  QuantizedTensor, quantize, quantizeAsync, quantizationError, Observer, paramsFor,
  type QuantizeOptions, type Granularity, type QuantizationError, type ObserverOptions, type ObserverMethod, type QuantParams,
} from './quantize';
export { matmulInt8, linear, matmul, type LinearOptions } from './ops';
export { prune, pruneRows, SparseTensor, type PruneOptions, type PruneRowsOptions, type SparseFormat, type QuantizeSparseOptions } from './sparse';
export { rmsnorm, softmax, swiglu, add, rope, type RmsNormOptions, type RopeOptions } from './small_ops';
export { loadModel, saveModel, Model, type ModelConfig, type LoadModelOptions, type GenerateOptions, type GeneratedToken, type GenerationStats, type PruneReport } from './model/model';
export { Tokenizer, type EncodeOptions, type PackedPieces, type TokenizerSpec } from './model/tokenizer';
export { Conversation, renderChat, type ChatMessage, type ChatOptions } from './model/chat';
export { pruneModel, type PruneModelOptions } from './model/prune';
export { evaluate, type EvaluateOptions, type EvaluationResult } from './model/evaluate';
export { quantizeModel, type QuantizeModelOptions, type QuantizeReport } from './model/quantize_model';
export { type SamplingOptions } from './model/sampler';
export { CudaWeight, cudaMemory, type CudaWeightFormat, type CudaMemory } from './cuda';
export { attention, attentionNaive, KVCache, KVView, type AttentionOptions, type KVCacheOptions, type KVDType } from './attention';
export { createServer, serve, type ServeOptions, type ModelServer, type ServerHealth } from './serve/server';

export type IsaName = 'amx' | 'avx512vnni' | 'avxvnni' | 'avx2' | 'ref';
export const ISAS: readonly IsaName[] = ['ref', 'avx2', 'avxvnni', 'avx512vnni', 'amx'];

export interface Info {
  version: string;
  /** supportedIsas: the paths `setIsa` accepts here; emulatedIsas: those of them that run with
   *  emulated intrinsics (only in a build made with SPARQ_EMULATE_ISA=ON, for tests; empty otherwise) */
  cpu: { vendor: string; brand: string; features: string[]; physicalCores: number; supportedIsas: IsaName[]; emulatedIsas: IsaName[] };
  kernels: { gemm_s8: IsaName; linear_s8: IsaName; sgemm: 'avx512' | 'avx2' | 'ref'; quantize_rows: string; attention: 'avx512' | 'avx2' | 'ref'; sparse: 'avx512vbmi2' | 'avx2' | 'ref' };
  threads: number;
  /** CUDA: whether this build has the kernels (and for which sm_ archs), the devices found
   *  (0, with `error` saying why, on machines without a GPU or driver) and their properties. */
  cuda: {
    compiled: boolean; devices: number; archs: string[]; runtimeVersion: number; driverVersion: number; error?: string;
    deviceList: { name: string; major: number; minor: number; sms: number; memoryBytes: number; clockMHz: number; bandwidthGBs: number }[];
  };
  /** bytes of native memory currently held by sparq (tensors, packed weights, scratch) */
  allocatedBytes: number;
  /** bytes of model files memory-mapped now (weights used as stored point into them; freed with the model) */
  mappedBytes: number;
  /** The memory arena behind native blocks of 64 KiB and more (tensors, outputs, KV caches,
   *  scratch): freed blocks are kept by size class and reused, so outputs left to the garbage
   *  collector stop costing fresh page faults; at most `capBytes` are kept (SPARQ_ARENA_MIB,
   *  default 1/8 of physical memory up to 1 GiB) and a block unused for 5 s is returned to
   *  the OS. `cachedBytes`: kept now (not in allocatedBytes); `hits` / `misses`: requests
   *  served from kept blocks / from fresh memory. Off (`on` false) with SPARQ_ARENA_MIB=0
   *  and in AddressSanitizer builds. */
  arena: { on: boolean; capBytes: number; cachedBytes: number; hits: number; misses: number };
  /** bytes in use in the process's C heap (glibc `mallinfo2`; -1 elsewhere): sparq's small
   *  blocks and every other native user's, for leak checks that RSS is too noisy for */
  mallocBytes: number;
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
const VERSION: string = (require('../package.json') as { version: string }).version;

/** CPU features, the kernel chosen per op, threads and CUDA devices. */
export function info(): Info {
  const r = loadNative().info();
  return {
    version: VERSION,
    cpu: { ...r.cpu, supportedIsas: r.cpu.supportedIsas as IsaName[], emulatedIsas: r.cpu.emulatedIsas as IsaName[] },
    kernels: {
      gemm_s8: r.kernels.gemm_s8 as IsaName,
      linear_s8: r.kernels.gemm_s8 as IsaName,
      sgemm: r.kernels.sgemm as 'avx512' | 'avx2' | 'ref',
      quantize_rows: r.kernels.quantize_rows,
      attention: r.kernels.attention as 'avx512' | 'avx2' | 'ref',
      sparse: r.kernels.sparse as 'avx512vbmi2' | 'avx2' | 'ref',
    },
    threads: r.threads,
    cuda: { ...r.cuda, archs: r.cuda.archs ? r.cuda.archs.split(',') : [], deviceList: r.cuda.deviceList ?? [] },
    allocatedBytes: r.allocatedBytes,
    mappedBytes: r.mappedBytes,
    arena: { ...r.arena },
    mallocBytes: r.mallocBytes,
  };
}

/** Returns every block the memory arena keeps for reuse to the OS now (it does so by itself
 *  for blocks unused for 5 s). */
export function trimMemory(): void {
  loadNative().trimMemory();
}

/** Sets the size of the shared thread pool (the caller of an op counts as one thread). */
export function setNumThreads(n: number): void {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 1024) {
    throw new RangeError(`setNumThreads: n must be an integer in [1, 1024]; got ${String(n)}`);
  }
  loadNative().setNumThreads(n);
}

/** Forces the kernel path for all later ops (as SPARQ_ISA does at startup). Throws a
 *  RangeError when this CPU/OS cannot run it. Packed weights stay valid. */
export function setIsa(isa: IsaName): void {
  if (!ISAS.includes(isa)) throw new RangeError(`setIsa: isa must be one of ${ISAS.join(', ')}; got ${String(isa)}`);
  loadNative().setIsa(isa);
}
