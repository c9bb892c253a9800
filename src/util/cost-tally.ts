/**
 * Where a container's fixed cost goes (issue 15: an unchanged container-mode backup should
 * cost <= 0.1 s per container): ploop invocations, fsyncs, manifest cache reads, object
 * store requests, each counted with its wall time into the tally of the container whose
 * async context does it (AsyncLocalStorage, so parallel containers keep separate tallies).
 * `backup -v` prints one line per container. Outside a tally nothing is recorded.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import type { ObjectStore } from "../uploader/store.js";

interface Cost {
  count: number;
  seconds: number;
}

export class CostTally {
  private readonly costs = new Map<string, Cost>();

  add(name: string, seconds: number): void {
    const cost = this.costs.get(name);
    if (cost === undefined) this.costs.set(name, { count: 1, seconds });
    else {
      cost.count++;
      cost.seconds += seconds;
    }
  }

  get(name: string): Cost {
    return this.costs.get(name) ?? { count: 0, seconds: 0 };
  }

  /** "ploop snapshot 1 (0.041 s), fsync 6 (0.012 s), ..." in the order first seen. */
  summary(): string {
    if (this.costs.size === 0) return "nothing counted";
    return [...this.costs].map(([name, c]) => `${name} ${c.count} (${c.seconds.toFixed(3)} s)`).join(", ");
  }
}

const current = new AsyncLocalStorage<CostTally>();

/** Run `fn` with `tally` collecting every cost noted inside it (and in what it awaits). */
export function withCostTally<T>(tally: CostTally, fn: () => Promise<T>): Promise<T> {
  return current.run(tally, fn);
}

export function noteCost(name: string, seconds: number): void {
  current.getStore()?.add(name, seconds);
}

/** Await `fn`, noting its wall time under `name` (failures too). */
export async function timedCost<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const tally = current.getStore();
  if (tally === undefined) return fn();
  const started = performance.now();
  try {
    return await fn();
  } finally {
    tally.add(name, (performance.now() - started) / 1000);
  }
}

/** fsync through the tally, as "fsync <what>". */
export function syncCounted(handle: { sync(): Promise<void> }, what: string): Promise<void> {
  return timedCost(`fsync ${what}`, () => handle.sync());
}

const REQUESTS = new Set(["put", "get", "getRange", "stat", "delete", "getVersion", "extendRetention", "deleteVersions"]);

/** The store, with each request (list: each listing) noted as "store <method>". */
export function tallyStoreRequests(store: ObjectStore): ObjectStore {
  return new Proxy(store, {
    get(target, prop, _receiver) {
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== "function") return value;
      const method = value as (...args: unknown[]) => unknown;
      const name = String(prop);
      if (REQUESTS.has(name)) return (...args: unknown[]) => timedCost(`store ${name}`, () => method.apply(target, args) as Promise<unknown>);
      if (name === "list" || name === "listVersions")
        return (...args: unknown[]) => {
          noteCost(`store ${name}`, 0);
          return method.apply(target, args);
        };
      return method.bind(target);
    },
  });
}
