// cuda.ts - weights resident on the GPU and device memory queries. Tensors
// move with Tensor.to('cuda'); quantized and sparse weights are repacked for
// the GPU by QuantizedTensor.to('cuda') / SparseTensor.to('cuda'), which
// return a CudaWeight for linear().
import { loadNative, type NativeDeviceWeight } from './native';

export type CudaWeightFormat = 'f32' | 'int8' | 'csr' | 'nm';

/** A linear weight [n, k] in GPU memory (int8 with its scales, or sparse CSR / N:M). */
export class CudaWeight {
  readonly device = 'cuda' as const;
  readonly shape: readonly [number, number];
  /** int8 (from int8 and int4 weights), csr (from csr and bitmask), nm (2:4, 4:8) */
  readonly format: CudaWeightFormat;
  /** bytes of device memory */
  readonly byteLength: number;
  /** @internal */ _native: NativeDeviceWeight | null;

  /** @internal */
  constructor(native: NativeDeviceWeight) {
    const m = native.meta();
    this._native = native;
    this.shape = Object.freeze([m.n, m.k]) as readonly [number, number];
    this.format = m.kind;
    this.byteLength = m.bytes;
  }

  get disposed(): boolean {
    return this._native === null;
  }

  /** @internal */
  _check(op: string): NativeDeviceWeight {
    if (!this._native) throw new TypeError(`${op}: the cuda weight has been disposed`);
    return this._native;
  }

  dispose(): void {
    this._native?.dispose();
    this._native = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return `CudaWeight(${this.format}, [${this.shape.join(', ')}]${this.disposed ? ', disposed' : ''})`;
  }
}

export interface CudaMemory {
  /** free bytes on the device */
  free: number;
  /** the device's memory */
  total: number;
  /** bytes held by sparq's device allocations */
  allocated: number;
}

/** Device memory of the CUDA device (throws an Error naming the reason when there is none). */
export function cudaMemory(): CudaMemory {
  return loadNative().cudaMemInfo();
}
