/**
 * The "changed paths" closure summary when neither nvd nor `nix store
 * diff-closures` can compare: what `diff -rq --no-dereference OLD NEW`
 * (GNU diffutils) reports, one line per path relative to the trees —
 * `+` only in the new one, `-` only in the old one, `~` changed. Pure.
 */

/** Lines of `diff -rq` output → sorted `+ path` / `- path` / `~ path` lines (at most `limit`). */
export function parseDiffBrief(output: string, left: string, right: string, limit = 200): string {
  const rel = (full: string): string | undefined => {
    for (const root of [left, right]) {
      if (full === root) return ".";
      if (full.startsWith(`${root}/`)) return full.slice(root.length + 1);
    }
    return undefined;
  };
  const lines: string[] = [];
  const add = (mark: "+" | "-" | "~", full: string) => {
    const name = rel(full);
    if (name !== undefined) lines.push(`${mark} ${name}`);
  };
  for (const line of output.split("\n")) {
    const only = /^Only in (.+): (.+)$/.exec(line);
    if (only?.[1] !== undefined && only[2] !== undefined) {
      const dir = only[1].replace(/\/$/, "");
      const full = `${dir}/${only[2]}`;
      if (dir === right || dir.startsWith(`${right}/`)) add("+", full);
      else add("-", full);
      continue;
    }
    // "Files A and B differ", "Symbolic links A and B differ": the path of the new side.
    // Names may hold " and ": split where the new tree's root begins.
    const differ = /^(?:Files|Symbolic links) (.+) differ$/.exec(line)?.[1];
    const split = differ?.lastIndexOf(` and ${right}`) ?? -1;
    if (differ !== undefined && split >= 0) {
      add("~", differ.slice(split + " and ".length));
      continue;
    }
    // "File A is a regular file while file B is a directory" and the like.
    const kind = /^File .+ while file (.+) is an? [a-z ]+$/.exec(line);
    if (kind?.[1] !== undefined) add("~", kind[1]);
  }
  const sorted = [...new Set(lines)].sort((x, y) =>
    x.slice(2) < y.slice(2) ? -1 : x.slice(2) > y.slice(2) ? 1 : 0,
  );
  if (sorted.length === 0) return "no difference";
  return sorted.length > limit
    ? [...sorted.slice(0, limit), `… and ${sorted.length - limit} more`].join("\n")
    : sorted.join("\n");
}
