/**
 * Problems found in a declaration, each tied to the dotted path of the value
 * at fault (`agents.ada.devices[1].attrs.idVendor`), so a user can find it.
 */
import type { z } from "zod";

export interface Problem {
  /** Dotted path of the offending value; "" for the whole declaration. */
  readonly path: string;
  readonly message: string;
}

export type PathPart = string | number;

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_-]*$/;

export function formatPath(parts: readonly PathPart[]): string {
  let out = "";
  for (const part of parts) {
    if (typeof part === "number") out += `[${part}]`;
    else if (IDENTIFIER.test(part)) out += out === "" ? part : `.${part}`;
    else out += `[${JSON.stringify(part)}]`;
  }
  return out;
}

export function formatProblem(problem: Problem): string {
  return problem.path === "" ? problem.message : `${problem.path}: ${problem.message}`;
}

type Issue = z.core.$ZodIssue;

/** Flatten zod issues into problems with full paths and plain messages. */
export function problemsFromIssues(
  issues: readonly Issue[],
  prefix: readonly PathPart[] = [],
): Problem[] {
  const out: Problem[] = [];
  for (const issue of issues) {
    const path = [...prefix, ...(issue.path as PathPart[])];
    switch (issue.code) {
      case "unrecognized_keys":
        for (const key of issue.keys) {
          out.push({ path: formatPath([...path, key]), message: "unknown option" });
        }
        break;
      case "invalid_key":
        for (const inner of problemsFromIssues(issue.issues as Issue[], [])) {
          out.push({ path: formatPath(path), message: `invalid name: ${inner.message}` });
        }
        break;
      case "invalid_union": {
        // For `string | { ... }` options, an object input deserves the object
        // branch's precise errors, not "matches neither".
        const informative = issue.errors.filter(
          (branch) =>
            !(
              branch.length === 1 &&
              branch[0]?.code === "invalid_type" &&
              branch[0].path.length === 0
            ),
        );
        const [only] = informative;
        if (informative.length === 1 && only) out.push(...problemsFromIssues(only, path));
        else out.push({ path: formatPath(path), message: issue.message });
        break;
      }
      case "invalid_type":
        out.push({
          path: formatPath(path),
          message:
            issue.input === undefined
              ? `required (${issue.expected})`
              : `expected ${issue.expected}, got ${describe(issue.input)}`,
        });
        break;
      default:
        out.push({ path: formatPath(path), message: issue.message });
    }
  }
  return out;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "a list";
  if (typeof value === "object") return "a table";
  if (typeof value === "string") return JSON.stringify(value);
  return `${typeof value} ${String(value)}`;
}
