/**
 * Matching present devices the way the rendered udev rule would: ATTRS{} for
 * tty walks up to ONE parent carrying every attribute, ATTR{} for the rest
 * looks at the device alone, values are udev glob patterns.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  fnmatch,
  matchesAttribute,
  matchesDevice,
  matchesUdevValue,
  type SysDevice,
} from "../../src/host/devices.ts";
import type { ResolvedDevice } from "../../src/town/types.ts";

function rule(subsystem: string, attrs: Record<string, string>): ResolvedDevice {
  return {
    subsystem,
    attrs: Object.entries(attrs).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    action: "add|bind",
    permission: "rw",
  };
}

const USB = "/sys/devices/pci0000:00/0000:00:14.0/usb1";

/** ttyACM0 below its USB interface, below the USB device carrying the ids, below the hub. */
const ttyAcm: SysDevice = {
  syspath: `${USB}/1-1/1-1:1.0/tty/ttyACM0`,
  subsystem: "tty",
  devnode: "/dev/ttyACM0",
  attrs: { dev: "166:0" },
  parents: [
    { syspath: `${USB}/1-1/1-1:1.0`, attrs: { bInterfaceNumber: "00", bInterfaceClass: "02" } },
    {
      syspath: `${USB}/1-1`,
      attrs: {
        idVendor: "0483",
        idProduct: "5740",
        product: "STM32 Virtual ComPort  ",
        serial: "207A3591",
      },
    },
    {
      syspath: USB,
      attrs: { idVendor: "1d6b", idProduct: "0002", product: "xHCI Host Controller" },
    },
  ],
};

/** The DFU bootloader as a usb device, below a hub that has a product of its own. */
const usbDfu: SysDevice = {
  syspath: `${USB}/1-2`,
  subsystem: "usb",
  devnode: "/dev/bus/usb/001/007",
  attrs: { idVendor: "0483", idProduct: "df11", product: "STM32  BOOTLOADER" },
  parents: [{ syspath: USB, attrs: { idVendor: "1d6b", product: "xHCI Host Controller" } }],
};

describe("tty rules match with ATTRS{}: the node or one of its parents", () => {
  it("finds idVendor and idProduct on the USB device two levels up", () => {
    assert.equal(matchesDevice(rule("tty", { idVendor: "0483", idProduct: "5740" }), ttyAcm), true);
  });

  it("matches an attribute of the node itself", () => {
    assert.equal(matchesDevice(rule("tty", { dev: "166:0" }), ttyAcm), true);
  });

  it("refuses keys that match only on different parents (udev wants them on one device)", () => {
    // idVendor 1d6b is the hub's, idProduct 5740 the device's: each matches somewhere, never together.
    assert.equal(
      matchesDevice(rule("tty", { idVendor: "1d6b", idProduct: "5740" }), ttyAcm),
      false,
    );
    // The node's own dev plus its parent's idVendor: also two devices.
    assert.equal(matchesDevice(rule("tty", { dev: "166:0", idVendor: "0483" }), ttyAcm), false);
  });

  it("refuses when a value differs or an attribute exists nowhere", () => {
    assert.equal(
      matchesDevice(rule("tty", { idVendor: "0483", idProduct: "5741" }), ttyAcm),
      false,
    );
    assert.equal(
      matchesDevice(rule("tty", { idVendor: "0483", manufacturer: "*" }), ttyAcm),
      false,
    );
  });

  it("refuses a device of another subsystem", () => {
    assert.equal(matchesDevice(rule("tty", { idVendor: "0483" }), usbDfu), false);
    assert.equal(matchesDevice(rule("usb", { dev: "166:0" }), ttyAcm), false);
  });
});

describe("other subsystems match with ATTR{}: the device alone", () => {
  it("matches the device's own attributes, double space and all", () => {
    assert.equal(matchesDevice(rule("usb", { product: "STM32  BOOTLOADER" }), usbDfu), true);
    assert.equal(matchesDevice(rule("usb", { idVendor: "0483", idProduct: "df11" }), usbDfu), true);
  });

  it("never looks at the parents", () => {
    assert.equal(matchesDevice(rule("usb", { product: "xHCI Host Controller" }), usbDfu), false);
    assert.equal(matchesDevice(rule("usb", { idVendor: "1d6b" }), usbDfu), false);
  });

  it("does not collapse inner whitespace", () => {
    assert.equal(matchesDevice(rule("usb", { product: "STM32 BOOTLOADER" }), usbDfu), false);
  });
});

describe("values are udev patterns", () => {
  it("globs with *, ? and bracket expressions", () => {
    assert.equal(matchesDevice(rule("tty", { idProduct: "57*" }), ttyAcm), true);
    assert.equal(matchesDevice(rule("tty", { idProduct: "574?" }), ttyAcm), true);
    assert.equal(matchesDevice(rule("tty", { idProduct: "57[0-9][0-4]" }), ttyAcm), true);
    assert.equal(matchesDevice(rule("tty", { idProduct: "57[!4]0" }), ttyAcm), false);
    assert.equal(matchesDevice(rule("usb", { product: "STM32*LOADER" }), usbDfu), true);
  });

  it("takes | as alternatives, glob or not", () => {
    assert.equal(matchesDevice(rule("tty", { idProduct: "5741|5740" }), ttyAcm), true);
    assert.equal(matchesDevice(rule("tty", { idProduct: "5741|57[34]0" }), ttyAcm), true);
    assert.equal(matchesDevice(rule("tty", { idProduct: "5741|5742" }), ttyAcm), false);
    assert.equal(matchesUdevValue("a|b", "a|b"), false);
  });

  it("an empty alternative matches an empty value; an empty pattern only an empty value", () => {
    assert.equal(matchesUdevValue("x|", ""), true);
    assert.equal(matchesUdevValue("|x*", ""), true);
    assert.equal(matchesUdevValue("x|", "y"), false);
    assert.equal(matchesUdevValue("", ""), true);
    assert.equal(matchesUdevValue("", "x"), false);
  });

  it("without a glob character the pattern is compared as is (a backslash is literal)", () => {
    assert.equal(matchesUdevValue("a\\b", "a\\b"), true);
    assert.equal(matchesUdevValue("a\\b", "ab"), false);
  });

  it("strips the value's trailing whitespace, unless the pattern ends in whitespace", () => {
    // sysfs keeps trailing blanks of USB strings: "STM32 Virtual ComPort  ".
    assert.equal(matchesDevice(rule("tty", { product: "STM32 Virtual ComPort" }), ttyAcm), true);
    assert.equal(matchesDevice(rule("tty", { product: "*ComPort" }), ttyAcm), true);
    assert.equal(matchesAttribute("foo", "foo \t"), true);
    assert.equal(matchesAttribute("foo ", "foo "), true);
    assert.equal(matchesAttribute("foo ", "foo"), false);
    assert.equal(matchesAttribute("foo ", "foo  "), false);
    assert.equal(matchesAttribute("foo", "  foo"), false);
  });
});

describe("fnmatch, as glibc's fnmatch(3) with no flags", () => {
  const cases: readonly [pattern: string, text: string, expected: boolean][] = [
    ["*", "", true],
    ["*", "any/thing.with/slashes", true],
    ["*.rules", ".rules", true],
    ["a*b*c", "aXXbYYc", true],
    ["a*b*c", "aXXbYY", false],
    ["*a*a*a*", "aaaa", true],
    ["*ab", "aab", true],
    ["?", "", false],
    ["??", "ab", true],
    ["[abc]", "b", true],
    ["[abc]", "d", false],
    ["[a-f0-9][a-f0-9]", "c7", true],
    ["[!a-f]", "g", true],
    ["[^a-f]", "a", false],
    ["[]x]", "]", true],
    ["[!]x]", "]", false],
    ["[a-]", "-", true],
    ["[z-a]", "m", false],
    ["[[:digit:]][[:upper:]]", "4A", true],
    ["[[:xdigit:]]", "g", false],
    ["[[:bogus:]]", "a", false],
    ["[abc", "[abc", true],
    ["[abc", "a", false],
    ["\\*", "*", true],
    ["\\*", "x", false],
    ["[\\]]", "]", true],
    ["a\\", "a\\", false],
    ["", "", true],
    ["", "a", false],
  ];
  for (const [pattern, text, expected] of cases) {
    it(`${JSON.stringify(pattern)} ${expected ? "matches" : "does not match"} ${JSON.stringify(text)}`, () => {
      assert.equal(fnmatch(pattern, text), expected);
    });
  }

  it("stays fast on patterns that backtrack", () => {
    const started = performance.now();
    assert.equal(fnmatch("*a*a*a*a*a*a*a*a*b", "a".repeat(5000)), false);
    assert.ok(performance.now() - started < 500);
  });
});
