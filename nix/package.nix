# flakem: the binary, one link per command name, completions and man pages for every name,
# wrapped so that it runs its own nixos-rebuild and the user's nix and ssh.
{
  lib,
  stdenv,
  rustPlatform,
  installShellFiles,
  makeBinaryWrapper,
  nixos-rebuild-ng,
  nix,
  openssh,
}:

let
  commands = import ./commands.nix;
  names = lib.escapeShellArgs commands;
  # The nixos-rebuild flakem runs, under its plain name, and its dialect (docs/NIXOS-REBUILD.md):
  # known here, so the packaged flakem never probes.
  nixos-rebuild = nixos-rebuild-ng.override { withNgSuffix = false; };
  dialect = "ng";
in
rustPlatform.buildRustPackage {
  pname = "flakem";
  inherit ((lib.importTOML ../Cargo.toml).package) version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../commands.json
      ../src
      # Cargo wants the files of every target it knows, even those it does not build.
      ../tests
      ../examples
      (lib.fileset.maybeMissing ../benches)
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  nativeBuildInputs = [
    installShellFiles
    makeBinaryWrapper
  ];

  # The unit tests (plans as data); the integration tests need root, sshd and a nix store.
  cargoTestFlags = [ "--bins" ];

  # Completions call back into the name they were generated for, so each name gets its own.
  postInstall = ''
    for name in ${names}; do
      ln -s flakem "$out/bin/$name"
    done
  ''
  + lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
    for name in flakem ${names}; do
      installShellCompletion --cmd "$name" \
        --bash <(COMPLETE=bash "$out/bin/$name") \
        --zsh <(COMPLETE=zsh "$out/bin/$name") \
        --fish <(COMPLETE=fish "$out/bin/$name")
    done
    FLAKEM_GENERATE_MAN=man "$out/bin/flakem"
    installManPage man/*.1
  '';

  # Its own nixos-rebuild first, as its dialect is known; the user's nix and ssh first (their
  # Lix, their pinned nix), its own only where the user has none. The user's FLAKEM_DIALECT
  # or --dialect still wins.
  postFixup = ''
    wrapProgram "$out/bin/flakem" \
      --prefix PATH : ${lib.makeBinPath [ nixos-rebuild ]} \
      --suffix PATH : ${
        lib.makeBinPath [
          nix
          openssh
        ]
      } \
      --set-default FLAKEM_DIALECT ${dialect}
  '';

  # The installed names as a user runs them: each through its link and the wrapper, with the
  # dialect built in.
  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck
    for name in ${names}; do
      "$out/bin/$name" --dry-run example-host >/dev/null
      test -e "$out/share/man/man1/$name.1.gz"
    done
    "$out/bin/flakem" --dry-run switch-push example-host | grep '^# dialect: ${dialect} '
    runHook postInstallCheck
  '';

  passthru = { inherit commands nixos-rebuild; };

  meta = {
    description = "Deploy NixOS machines declared in a flake, printing every command it runs";
    mainProgram = "flakem";
    platforms = lib.platforms.unix;
  };
}
