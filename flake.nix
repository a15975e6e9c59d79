{
  description = "flakem: deploy NixOS machines declared in a flake, printing every command it runs";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixpkgs-unstable";
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs =
    {
      self,
      nixpkgs,
      flake-utils,
    }:
    let
      inherit (nixpkgs) lib;
      commands = import ./nix/commands.nix;
      # flakem, and the same package once more under each command name, so that
      # `nix run .#switch-pull` runs that name.
      flakemFor =
        pkgs:
        let
          flakem = pkgs.callPackage ./nix/package.nix { };
        in
        { inherit flakem; }
        // lib.genAttrs commands (name: lib.addMetaAttrs { mainProgram = name; } flakem);
    in
    flake-utils.lib.eachDefaultSystem (
      system:
      let
        pkgs = nixpkgs.legacyPackages.${system};
      in
      {
        packages = flakemFor pkgs // {
          default = self.packages.${system}.flakem;
        };

        # Building flakem runs its unit tests and tries every installed name.
        checks = {
          inherit (self.packages.${system}) flakem;
        }
        // lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux {
          # The module, used as the README shows, puts this flake's package on the system.
          nixos-module =
            let
              nixos = lib.nixosSystem {
                modules = [
                  self.nixosModules.default
                  {
                    nixpkgs.hostPlatform = system;
                    packages.flakem.enable = true;
                  }
                ];
              };
            in
            assert lib.elem self.packages.${system}.default nixos.config.environment.systemPackages;
            pkgs.emptyFile;
        };

        devShells.default = pkgs.mkShell {
          packages = with pkgs; [
            cargo
            rustc
            clippy
            rustfmt
            nix
            openssh
          ];
        };
      }
    )
    // {
      overlays.default = final: prev: flakemFor final;

      nixosModules.default = import ./nix/module.nix self;
      darwinModules.default = import ./nix/module.nix self;
    };
}
