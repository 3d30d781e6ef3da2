/** The declaration formats, apart from their parsers: the CLI names them in every command's help. */
export type DeclarationFormat = "toml" | "json" | "yaml" | "nix";
export const FORMATS: readonly DeclarationFormat[] = ["toml", "json", "yaml", "nix"];
