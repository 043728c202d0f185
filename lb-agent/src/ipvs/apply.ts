import type { IpvsClient } from './client.ts';
import type { IpvsError } from './errors.ts';
import type { IpvsOperation } from './types.ts';

export interface ApplyReport {
  applied: IpvsOperation[];
  failed: { op: IpvsOperation; error: IpvsError }[];
}

/**
 * Executes a plan's operations. One failure does not stop the others (a destination whose
 * service could not be created fails on its own with SERVICE_NOT_FOUND); the report says
 * exactly what reached the kernel.
 */
export async function applyOperations(
  client: IpvsClient,
  ops: readonly IpvsOperation[],
  onProgress?: (done: number, total: number) => void,
): Promise<ApplyReport> {
  const report: ApplyReport = { applied: [], failed: [] };
  if (ops.length === 0) return report;
  const results = await client.execute(ops, onProgress && ((done) => onProgress(done, ops.length)));
  results.forEach((error, i) => {
    const op = ops[i]!;
    if (error) report.failed.push({ op, error });
    else report.applied.push(op);
  });
  return report;
}
