/**
 * `node trust-main.ts <dir>`, run as the agent by the portal before an
 * interactive claude starts in a directory the mayor chose: marks it trusted
 * in the agent's `~/.claude.json`, so claude opens at its prompt instead of
 * its "do you trust this folder?" dialog (the mayor's choice is the trust).
 */
import os from "node:os";
import path from "node:path";
import { trustClaudeProject } from "./trust.ts";

const dir = process.argv[2];
if (!dir || !path.isAbsolute(dir)) {
  process.stderr.write("usage: trust-main.ts <absolute directory>\n");
  process.exit(2);
}
await trustClaudeProject(process.env.HOME || os.homedir(), dir).catch((error: Error) => {
  // Not fatal: claude then asks, and the human at the portal answers.
  process.stderr.write(`nuketown: cannot mark ${dir} trusted for claude: ${error.message}\n`);
});
