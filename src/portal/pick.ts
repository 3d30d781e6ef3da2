import { createInterface } from "node:readline";
import { startProcess } from "../os/process.ts";
import { searchPath, whichSync } from "../os/which.ts";
import { fuzzyFilter } from "./fuzzy.ts";

export interface PickRequest<T> {
  /** Shown as the prompt: "project", "agent". */
  readonly title: string;
  readonly items: readonly T[];
  readonly label: (item: T) => string;
  /** Initial filter. */
  readonly query?: string;
}

/** Chooses one item, or undefined when the human gives up. */
export type Picker = <T>(request: PickRequest<T>) => Promise<T | undefined>;

/** Where a program is on PATH (plus the sbin dirs a non-root PATH may lack), if anywhere. */
export function findProgram(program: string, env: NodeJS.ProcessEnv): string | undefined {
  return whichSync(program, searchPath(env.PATH));
}

/** Lines shown at most by the numbered picker; a query narrows the rest. */
const SHOWN = 40;

/**
 * The picker without fzf: a numbered list on `output`, one answer per line
 * from `input`. A single match is taken without asking; a number picks;
 * anything else becomes the new filter; an empty line picks the only match;
 * end of input gives up.
 */
export async function numberedPick<T>(
  request: PickRequest<T>,
  input: NodeJS.ReadableStream,
  output: NodeJS.WritableStream,
): Promise<T | undefined> {
  const reader = createInterface({ input, terminal: false });
  const lines = reader[Symbol.asyncIterator]();
  let query = request.query ?? "";
  // Like fzf --select-1: nothing to choose between, nothing to ask.
  const first = fuzzyFilter(query, request.items, request.label);
  if (first.length === 1) return first[0];
  try {
    for (;;) {
      const matches = fuzzyFilter(query, request.items, request.label);
      if (matches.length === 0) output.write(`no ${request.title} matches "${query}"\n`);
      matches.slice(0, SHOWN).forEach((item, i) => {
        output.write(`${String(i + 1).padStart(3)}) ${request.label(item)}\n`);
      });
      if (matches.length > SHOWN)
        output.write(`     … ${matches.length - SHOWN} more: type to narrow\n`);
      output.write(
        `${request.title} (number, or text to filter${query ? `; now "${query}"` : ""}): `,
      );
      const next = await lines.next();
      if (next.done) {
        output.write("\n");
        return undefined;
      }
      const answer = next.value.trim();
      if (/^[0-9]+$/.test(answer)) {
        const chosen = matches[Number(answer) - 1];
        if (chosen !== undefined && Number(answer) <= SHOWN) return chosen;
        output.write(`no entry ${answer}\n`);
      } else if (answer === "" && matches.length === 1) {
        return matches[0];
      } else if (answer !== "") {
        query = answer;
      }
    }
  } finally {
    // Closing the reader also pauses stdin, which would otherwise keep us alive.
    reader.close();
  }
}

/**
 * fzf on the terminal: items go in numbered (the number hidden), so equal
 * labels stay distinct. Resolves undefined when fzf is left with Esc or
 * nothing matches.
 */
export function fzfPick<T>(request: PickRequest<T>, fzf: string): Promise<T | undefined> {
  return new Promise((resolve, reject) => {
    const child = startProcess(
      fzf,
      [
        "--delimiter",
        "\t",
        "--with-nth",
        "2..",
        "--prompt",
        `${request.title}> `,
        "--height",
        "40%",
        "--reverse",
        "--select-1",
        "--exit-0",
        ...(request.query ? ["--query", request.query] : []),
      ],
      { stdio: ["pipe", "pipe", "inherit"] },
    );
    let chosen = "";
    child.stdout.on("data", (chunk: Buffer) => {
      chosen += chunk.toString("utf8");
    });
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) return resolve(undefined);
      const index = Number(chosen.split("\t")[0]);
      resolve(request.items[index]);
    });
    child.stdin.on("error", () => {});
    child.stdin.end(
      request.items.map((item, i) => `${i}\t${request.label(item).replace(/\s/g, " ")}\n`).join(""),
    );
  });
}

/** fzf when installed and stdin is a terminal; the numbered list otherwise. */
export function terminalPicker(
  env: NodeJS.ProcessEnv,
  input: NodeJS.ReadStream,
  output: NodeJS.WritableStream,
): Picker {
  const fzf = input.isTTY ? findProgram("fzf", env) : undefined;
  return (request) => (fzf ? fzfPick(request, fzf) : numberedPick(request, input, output));
}
