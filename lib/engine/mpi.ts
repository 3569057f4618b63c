/**
 * MPI through Deno's FFI: the standard C API of Open MPI's or MPICH's `libmpi`,
 * opened at run time, for data-parallel training across processes and
 * machines (`mpirun -np N deno task train ...`, `srun ...`).
 *
 * The C handles (`MPI_COMM_WORLD`, `MPI_FLOAT`, `MPI_SUM`) are macros whose
 * values differ between implementations: Open MPI's are addresses of globals,
 * MPICH's integer constants. Their Fortran handles are plain integers that each
 * implementation fixes in its `mpif.h`, and `MPI_Comm_f2c` / `MPI_Type_f2c` /
 * `MPI_Op_f2c` turn them into the C handles of the library at hand (MPICH,
 * whose C handles are its Fortran ones, defines them as macros and exports no
 * such symbols: there the value is the handle). C code
 * may use the Fortran types: `MPI_REAL` and `MPI_DOUBLE_PRECISION` are
 * float32 and float64 in both.
 *
 * @example
 * ```ts
 * const launch = launcherFromEnv({ OMPI_COMM_WORLD_SIZE: "2", OMPI_COMM_WORLD_RANK: "1", OMPI_COMM_WORLD_LOCAL_SIZE: "2" });
 * if (launch?.rank !== 1 || launch.size !== 2 || launch.localSize !== 2) throw new Error("not detected");
 * if (launcherFromEnv({}) !== null) throw new Error("no launcher expected");
 * ```
 *
 * @module
 */
import { InputError } from "../errors.ts";

/** How the process was launched, read from the launcher's environment. */
export interface Launch {
  launcher: "Open MPI" | "MPICH" | "Slurm";
  rank: number;
  size: number;
  /** Ranks on this machine (they share its cores). */
  localSize: number;
}

const int = (v: string | undefined): number | undefined => {
  if (v === undefined || !/^\d+$/.test(v.trim())) return undefined;
  return Number(v);
};

/**
 * Slurm's per-node task counts, `2(x3),1` style, expanded: [2, 2, 2, 1].
 *
 * @example
 * ```ts
 * import { deepStrictEqual as assertEquals } from "node:assert";
 * assertEquals(slurmTasksPerNode("2(x3),1"), [2, 2, 2, 1]);
 * ```
 */
export function slurmTasksPerNode(s: string): number[] {
  const out: number[] = [];
  for (const part of s.split(",")) {
    const m = /^\s*(\d+)(?:\(x(\d+)\))?\s*$/.exec(part);
    if (!m) return [];
    for (let k = 0; k < Number(m[2] ?? 1); k++) out.push(Number(m[1]));
  }
  return out;
}

/**
 * The MPI launch this process is part of, from the variables its launcher
 * sets: Open MPI's `mpirun` (`OMPI_COMM_WORLD_*`), MPICH's Hydra (`PMI_RANK`,
 * `PMI_SIZE`, `MPI_LOCALNRANKS`) or Slurm's `srun` (`SLURM_PROCID`,
 * `SLURM_STEP_NUM_TASKS`; a batch script alone is not a launch). Null when
 * none launched it.
 */
export function launcherFromEnv(env: Record<string, string | undefined>): Launch | null {
  const ompi = { size: int(env.OMPI_COMM_WORLD_SIZE), rank: int(env.OMPI_COMM_WORLD_RANK) };
  if (ompi.size !== undefined && ompi.rank !== undefined) {
    const localSize = int(env.OMPI_COMM_WORLD_LOCAL_SIZE) ?? 1;
    return { launcher: "Open MPI", ...ompi, localSize } as Launch;
  }
  const pmi = { size: int(env.PMI_SIZE), rank: int(env.PMI_RANK) };
  if (pmi.size !== undefined && pmi.rank !== undefined) {
    return { launcher: "MPICH", ...pmi, localSize: int(env.MPI_LOCALNRANKS) ?? 1 } as Launch;
  }
  const slurm = { size: int(env.SLURM_STEP_NUM_TASKS), rank: int(env.SLURM_PROCID) };
  if (slurm.size !== undefined && slurm.rank !== undefined) {
    const perNode = slurmTasksPerNode(env.SLURM_STEP_TASKS_PER_NODE ?? "");
    const localSize = perNode[int(env.SLURM_NODEID) ?? 0] ?? 1;
    return { launcher: "Slurm", ...slurm, localSize } as Launch;
  }
  return null;
}

/** The Fortran handles an implementation fixes in its `mpif.h`. */
interface Flavour {
  name: string;
  /** Width of a C handle: Open MPI's are pointers, MPICH's 32-bit integers. */
  handle: "pointer" | "i32";
  commWorld: number;
  real: number;
  doublePrecision: number;
  byte: number;
  sum: number;
}

/** Open MPI 4 (`mpif-handles.h`) and MPICH 3-4 (`mpif.h`). */
const FLAVOURS: Flavour[] = [
  { name: "Open MPI", handle: "pointer", commWorld: 0, real: 13, doublePrecision: 17, byte: 1, sum: 3 },
  {
    name: "MPICH",
    handle: "i32",
    commWorld: 0x44000000,
    real: 0x4c00041c,
    doublePrecision: 0x4c00081f,
    byte: 0x4c00010d,
    sum: 0x58000003,
  },
];

/** Library names tried in order when `MPI_LIB` is not set. */
export const MPI_LIBRARIES = ["libmpi.so.40", "libmpich.so.12", "libmpi.so.12", "libmpi.so", "libmpi.dylib"];

/** What to install when no libmpi opens. */
export const MPI_INSTALL_HINT =
  "install Open MPI (sudo apt-get install -y openmpi-bin libopenmpi-dev) or MPICH (sudo apt-get install -y mpich), " +
  "or set MPI_LIB to the path of libmpi.so";

const MPI_THREAD_FUNNELED = 1; // the same in both implementations
/** Elements per collective call: counts are C ints, and big buffers go in slices. */
const CHUNK = 1 << 24;

function symbols(h: "pointer" | "i32") {
  return {
    MPI_Init_thread: { parameters: ["pointer", "pointer", "i32", "buffer"], result: "i32" },
    MPI_Initialized: { parameters: ["buffer"], result: "i32" },
    MPI_Comm_f2c: { parameters: ["i32"], result: h, optional: true },
    MPI_Type_f2c: { parameters: ["i32"], result: h, optional: true },
    MPI_Op_f2c: { parameters: ["i32"], result: h, optional: true },
    MPI_Comm_rank: { parameters: [h, "buffer"], result: "i32" },
    MPI_Comm_size: { parameters: [h, "buffer"], result: "i32" },
    MPI_Allreduce: { parameters: ["buffer", "buffer", "i32", h, h, h], result: "i32" },
    MPI_Bcast: { parameters: ["buffer", "i32", h, "i32", h], result: "i32" },
    MPI_Barrier: { parameters: [h], result: "i32" },
    MPI_Ibarrier: { parameters: [h, "buffer"], result: "i32" },
    MPI_Test: { parameters: ["buffer", "buffer", "buffer"], result: "i32" },
    MPI_Abort: { parameters: [h, "i32"], result: "i32" },
    MPI_Finalize: { parameters: [], result: "i32" },
    MPI_Error_string: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  } as const;
}

// A C handle as the FFI passes it: a pointer object (Open MPI) or a number (MPICH).
type Handle = Deno.PointerValue | number;
type Buf = ArrayBufferView;

/** The calls as this file makes them; {@linkcode symbols} declares them to the FFI for either handle width. */
interface MpiCalls {
  MPI_Init_thread(argc: null, argv: null, required: number, provided: Buf): number;
  MPI_Initialized(flag: Buf): number;
  MPI_Comm_f2c: ((f: number) => Handle) | null;
  MPI_Type_f2c: ((f: number) => Handle) | null;
  MPI_Op_f2c: ((f: number) => Handle) | null;
  MPI_Comm_rank(comm: Handle, rank: Buf): number;
  MPI_Comm_size(comm: Handle, size: Buf): number;
  MPI_Allreduce(send: Buf, recv: Buf, count: number, type: Handle, op: Handle, comm: Handle): number;
  MPI_Bcast(buf: Buf, count: number, type: Handle, root: number, comm: Handle): number;
  MPI_Barrier(comm: Handle): number;
  MPI_Ibarrier(comm: Handle, request: Buf): number;
  MPI_Test(request: Buf, flag: Buf, status: Buf): number;
  MPI_Abort(comm: Handle, code: number): number;
  MPI_Finalize(): number;
  MPI_Error_string(code: number, text: Buf, len: Buf): number;
}

/** Opens the first library of `names` that loads, with `defs`; names the tried ones on failure. */
function openFirst<S extends Deno.ForeignLibraryInterface>(names: string[], defs: S): [Deno.DynamicLibrary<S>, string] {
  const errors: string[] = [];
  for (const name of names) {
    try {
      return [Deno.dlopen(name, defs), name];
    } catch (e) {
      errors.push(`${name}: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  throw new InputError(`no MPI library could be opened (${errors.join("; ")}): ${MPI_INSTALL_HINT}`);
}

/** The implementation a library is, from `MPI_Get_library_version` (callable before `MPI_Init`). */
function libraryVersion(name: string): string {
  const [lib] = openFirst(
    [name],
    {
      MPI_Get_library_version: { parameters: ["buffer", "buffer"], result: "i32" },
    } as const,
  );
  try {
    const text = new Uint8Array(8192), len = new Int32Array(1);
    lib.symbols.MPI_Get_library_version(text, len);
    return new TextDecoder().decode(text.subarray(0, len[0])).replace(/\0.*$/s, "").trim();
  } finally {
    lib.close();
  }
}

/**
 * An initialised MPI world: this process's rank among `size`, and the
 * collectives data-parallel training needs. Open it with {@linkcode openMpi}.
 */
export class Mpi {
  readonly rank: number;
  readonly size: number;
  /** Ranks on this machine, from the launcher (1 when unknown). */
  readonly localSize: number;
  /** The library's own version line, e.g. "Open MPI v4.1.4, ...". */
  readonly version: string;
  readonly library: string;
  #s: MpiCalls;
  #comm: Handle;
  #f32: Handle;
  #f64: Handle;
  #byte: Handle;
  #sum: Handle;
  #closed = false;

  /** @internal Use {@linkcode openMpi}. */
  constructor(calls: MpiCalls, library: string, version: string, flavour: Flavour, localSize: number) {
    this.#s = calls;
    this.library = library;
    this.version = version;
    const s = calls;
    const provided = new Int32Array(1), flag = new Int32Array(1);
    s.MPI_Initialized(flag);
    if (!flag[0]) this.#check(s.MPI_Init_thread(null, null, MPI_THREAD_FUNNELED, provided), "MPI_Init_thread");
    // A missing conversion is a macro for the identity (MPICH).
    const f2c = (fn: ((f: number) => Handle) | null, f: number): Handle => fn ? fn(f) : f;
    this.#comm = f2c(s.MPI_Comm_f2c, flavour.commWorld);
    this.#f32 = f2c(s.MPI_Type_f2c, flavour.real);
    this.#f64 = f2c(s.MPI_Type_f2c, flavour.doublePrecision);
    this.#byte = f2c(s.MPI_Type_f2c, flavour.byte);
    this.#sum = f2c(s.MPI_Op_f2c, flavour.sum);
    const v = new Int32Array(1);
    this.#check(s.MPI_Comm_rank(this.#comm, v), "MPI_Comm_rank");
    this.rank = v[0];
    this.#check(s.MPI_Comm_size(this.#comm, v), "MPI_Comm_size");
    this.size = v[0];
    this.localSize = Math.max(1, Math.min(localSize, this.size));
  }

  #check(code: number, what: string): void {
    if (code === 0) return;
    const text = new Uint8Array(1024), len = new Int32Array(1);
    this.#s.MPI_Error_string(code, text, len);
    throw new Error(`${what} failed (${code}): ${new TextDecoder().decode(text.subarray(0, len[0]))}`);
  }

  #open(): void {
    if (this.#closed) throw new Error("MPI is finalized");
  }

  /**
   * Element-wise sum of `data` over all ranks, returned in `into` or a new
   * array (every rank gets the same sums). float32 and float64 arrays. Reusing
   * `into` across steps saves touching fresh pages (as slow as the reduce itself
   * for 100 MB here).
   */
  allreduceSum<T extends Float32Array | Float64Array>(data: T, into?: T): T {
    this.#open();
    if (into && (into.length !== data.length || into.constructor !== data.constructor || into.buffer === data.buffer)) {
      throw new RangeError("allreduceSum: `into` must be another array of the same type and length");
    }
    const out = into ?? new (data.constructor as { new (n: number): T })(data.length);
    const type = data instanceof Float32Array ? this.#f32 : this.#f64;
    for (let i = 0; i < data.length; i += CHUNK) {
      const n = Math.min(CHUNK, data.length - i);
      this.#check(
        this.#s.MPI_Allreduce(
          data.subarray(i, i + n),
          out.subarray(i, i + n),
          n,
          type,
          this.#sum,
          this.#comm,
        ),
        "MPI_Allreduce",
      );
    }
    return out;
  }

  /** Overwrites `data` on every rank with `root`'s (all ranks pass arrays of the same length). */
  bcast(data: Float32Array | Float64Array | Uint8Array, root = 0): void {
    this.#open();
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    for (let i = 0; i < bytes.length; i += CHUNK) {
      const n = Math.min(CHUNK, bytes.length - i);
      this.#check(
        this.#s.MPI_Bcast(bytes.subarray(i, i + n), n, this.#byte, root, this.#comm),
        "MPI_Bcast",
      );
    }
  }

  /** `root`'s string on every rank. */
  bcastString(text: string, root = 0): string {
    const mine = new TextEncoder().encode(text);
    const len = new Float64Array([this.rank === root ? mine.length : 0]);
    this.bcast(len, root);
    const buf = this.rank === root ? mine : new Uint8Array(len[0]);
    this.bcast(buf, root);
    return new TextDecoder().decode(buf);
  }

  /** Blocks until every rank reaches it. */
  barrier(): void {
    this.#open();
    this.#check(this.#s.MPI_Barrier(this.#comm), "MPI_Barrier");
  }

  /**
   * A barrier that sleeps while it waits, where `MPI_Barrier` would spin a
   * core: ranks waiting for rank 0's eval or checkpoint leave it the CPU.
   */
  async quietBarrier(pollMs = 20): Promise<void> {
    this.#open();
    const s = this.#s;
    // A request is a pointer (Open MPI) or an int (MPICH); a status is 20-24 bytes: room for either.
    const request = new BigUint64Array(1), flag = new Int32Array(1), status = new Uint8Array(64);
    this.#check(s.MPI_Ibarrier(this.#comm, request), "MPI_Ibarrier");
    for (;;) {
      this.#check(s.MPI_Test(request, flag, status), "MPI_Test");
      if (flag[0]) return;
      await new Promise((r) => setTimeout(r, pollMs));
    }
  }

  /** Ends every rank of the job with `code` (the launcher kills the rest). Does not return. */
  abort(code = 1): never {
    if (!this.#closed) {
      this.#s.MPI_Abort(this.#comm, code);
    }
    Deno.exit(code);
  }

  /** Shuts MPI down; call once, on every rank, after the last collective. */
  finalize(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#s.MPI_Finalize();
  }
}

/** Library names to try for a launch: the launcher's own implementation first (Hydra is MPICH's). */
export function librariesFor(launcher: Launch["launcher"] | undefined): string[] {
  const mpich = ["libmpich.so.12", "libmpi.so.12"];
  return launcher === "MPICH" ? [...mpich, ...MPI_LIBRARIES.filter((n) => !mpich.includes(n))] : MPI_LIBRARIES;
}

/**
 * Opens `libmpi` (from `o.library`, `MPI_LIB`, else the usual names of Open
 * MPI and MPICH, the launcher's first) and initialises MPI. `o.launch` is what
 * the launcher said (see {@linkcode launcherFromEnv}): its count of ranks on
 * this machine, and a check that the library sees the same world (a library
 * of another implementation than the launcher's starts alone). Throws an
 * {@linkcode InputError} with the apt line when no library opens or the
 * implementation is unknown.
 */
export function openMpi(o: { library?: string; launch?: Launch | null } = {}): Mpi {
  const wanted = o.library ?? Deno.env.get("MPI_LIB");
  const [probe, name] = openFirst(
    wanted ? [wanted] : librariesFor(o.launch?.launcher),
    {
      MPI_Get_library_version: { parameters: ["buffer", "buffer"], result: "i32" },
    } as const,
  );
  probe.close();
  const version = libraryVersion(name);
  const flavour = FLAVOURS.find((f) => version.startsWith(f.name)) ??
    (/MPICH|Intel\(R\) MPI|MVAPICH/i.test(version) ? FLAVOURS[1] : undefined);
  if (!flavour) {
    throw new InputError(
      `${name} is "${version.split("\n")[0]}", which is neither Open MPI nor MPICH: ${MPI_INSTALL_HINT}`,
    );
  }
  const lib = Deno.dlopen(name, symbols(flavour.handle));
  const mpi = new Mpi(
    lib.symbols as unknown as MpiCalls,
    name,
    version.split("\n")[0],
    flavour,
    o.launch?.localSize ?? 1,
  );
  if (o.launch && mpi.size !== o.launch.size) {
    throw new InputError(
      `${o.launch.launcher}'s launcher started ${o.launch.size} ranks, but ${name} (${mpi.version.split(",")[0]}) ` +
        `sees ${mpi.size}: the library is not the launcher's. Set MPI_LIB to the launcher's libmpi`,
    );
  }
  return mpi;
}
