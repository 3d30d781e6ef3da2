# A stand-in for the few parts of nixpkgs that nix/module.nix uses, for
# evaluating it offline: packages are fake derivations whose outPath is a
# directory of this machine (`nuketown` is the checkout, `acl` is /usr, so
# setfacl is /usr/bin/setfacl as in the golden files), and runCommand,
# writeScript and formats.json are real derivations built by /bin/sh with no
# sandbox and no binary cache, so the manifest derivation really runs nuketown.
# Test data only: not nixpkgs.
{
  lib,
  root,
  packageNames,
}:
let
  fake = name: outPath: {
    type = "derivation";
    inherit name outPath;
  };
  runCommand =
    name: env: script:
    derivation (
      {
        inherit name;
        system = builtins.currentSystem;
        builder = "/bin/sh";
        args = [
          "-c"
          ''
            set -eu
            ${script}
          ''
        ];
        PATH = lib.concatMapStrings (p: "${p}/bin:") (env.nativeBuildInputs or [ ]) + "/usr/bin:/bin";
      }
      // removeAttrs env [ "nativeBuildInputs" ]
    );
in
lib.genAttrs packageNames (n: fake n "/nonexistent/stand-in/${n}")
// {
  nuketown = fake "nuketown" root;
  acl = fake "acl" "/usr";
  inherit runCommand;
  writeScript =
    name: text:
    runCommand name {
      inherit text;
      passAsFile = [ "text" ];
    } ''cp "$textPath" "$out"; chmod 0555 "$out"'';
  formats.json = { }: {
    type = lib.types.anything;
    generate =
      name: value:
      runCommand name {
        value = builtins.toJSON value;
        passAsFile = [ "value" ];
      } ''cp "$valuePath" "$out"'';
  };
}
