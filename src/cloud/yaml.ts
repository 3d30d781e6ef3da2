/**
 * Objects as one multi-document YAML stream, keys sorted at every level, so
 * the same town always prints the same bytes. A small emitter for JSON data
 * (what renderers produce) rather than the `yaml` package's stringify: that
 * one spends ~1 s on 1,000 agents, this one ~50 ms. Strings that could read
 * as anything but themselves are double-quoted with JSON escapes, which YAML
 * shares; the tests parse the output back with `yaml` and compare.
 */

const PLAIN = /^[A-Za-z_/.][A-Za-z0-9_./@+-]*(?:[ :][A-Za-z0-9_./@+-]+)*$/;
const RESERVED = /^(?:true|false|yes|no|on|off|y|n|null|~)$/i;
const NUMERIC = /^[-+.]?[0-9]/;

function scalar(value: unknown): string {
  if (typeof value === "string") {
    return PLAIN.test(value) &&
      !RESERVED.test(value) &&
      !NUMERIC.test(value) &&
      !value.includes(": ") &&
      !value.endsWith(":")
      ? value
      : JSON.stringify(value);
  }
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return "null";
}

const isMap = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === "object" && !Array.isArray(v);

function emit(value: unknown, indent: string, out: string[]): void {
  if (isMap(value)) {
    for (const key of Object.keys(value).sort()) {
      const inner = value[key];
      if (inner === undefined) continue;
      emitEntry(`${indent}${scalar(key)}:`, inner, indent, out);
    }
  } else if (Array.isArray(value)) {
    for (const item of value) {
      if (isMap(item) && Object.keys(item).length > 0) {
        const lines: string[] = [];
        emit(item, `${indent}  `, lines);
        const first = lines[0] ?? "";
        out.push(`${indent}- ${first.slice(indent.length + 2)}`, ...lines.slice(1));
      } else emitEntry(`${indent}-`, item, indent, out);
    }
  }
}

function emitEntry(head: string, value: unknown, indent: string, out: string[]): void {
  if (isMap(value) && Object.keys(value).length > 0) {
    out.push(head);
    emit(value, `${indent}  `, out);
  } else if (Array.isArray(value) && value.length > 0) {
    out.push(head);
    emit(value, `${indent}  `, out);
  } else if (isMap(value)) out.push(`${head} {}`);
  else if (Array.isArray(value)) out.push(`${head} []`);
  else out.push(`${head} ${scalar(value)}`);
}

export function toYaml(objects: readonly unknown[]): string {
  const out: string[] = [];
  for (const object of objects) {
    out.push("---");
    emit(object, "", out);
  }
  return out.length === 0 ? "" : `${out.join("\n")}\n`;
}
