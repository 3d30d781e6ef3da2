/** A file rendered from the town, as it lands on a host. */
export interface Artifact {
  /** Absolute path on the host. */
  readonly path: string;
  readonly content: string;
  /** Octal mode such as "0644". */
  readonly mode: string;
  /** Owning user and group; root when absent. */
  readonly owner?: string;
  readonly group?: string;
  /** The reconciler layer that installs it. */
  readonly layer: "manifest" | "identity" | "devices" | "privileges" | "services";
}
