/**
 * Objects as one multi-document YAML stream, keys sorted at every level, so
 * the same town always prints the same bytes.
 */
import { stringify } from "yaml";

export function toYaml(objects: readonly unknown[]): string {
  return objects
    .map(
      (o) =>
        `---\n${stringify(o, { sortMapEntries: true, lineWidth: 0, aliasDuplicateObjects: false })}`,
    )
    .join("");
}
