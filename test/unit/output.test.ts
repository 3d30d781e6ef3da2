import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { printable, table } from "../../src/output.ts";

describe("terminal output", () => {
  it("escapes what could redraw or disguise a line, and keeps newlines and tabs", () => {
    assert.equal(printable("ok\tline\nnext"), "ok\tline\nnext");
    assert.equal(printable("\u001b[2Kfake G"), "\\x1b[2Kfake G");
    assert.equal(printable("a\rb\u0007"), "a\\rb\\x07");
    assert.equal(printable("evil\u202egnp.exe"), "evil\\u{202e}gnp.exe");
    assert.equal(printable("zero\u200bwidth"), "zero\\u{200b}width");
    assert.equal(printable("C1 \u009b"), "C1 \\x9b");
  });

  it("shows the invisible characters that pass for a space or for nothing", () => {
    assert.equal(printable("rm\u00a0-rf"), "rm\\xa0-rf");
    assert.equal(
      printable("a\u2060b\u3164c\ufeffd\u202fe"),
      "a\\u{2060}b\\u{3164}c\\u{feff}d\\u{202f}e",
    );
    assert.equal(printable("\u115f\uffa0\u180e"), "\\u{115f}\\u{ffa0}\\u{180e}");
    assert.equal(printable("plain é ü 日本"), "plain é ü 日本");
  });

  it("lines columns up under an upper-cased header", () => {
    assert.equal(table(["a", "bb"], [["xxx", "y"]]), "A    BB\nxxx  y");
  });
});
