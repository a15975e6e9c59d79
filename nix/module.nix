# The NixOS and nix-darwin module: `packages.flakem.enable` puts flakem and a command for each
# of its names on the system. The package is this flake's own, for the system's platform, and
# not an overlay's, so that the module also works where `nixpkgs.pkgs` is set.
flake:
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.packages.flakem;
in
{
  options.packages.flakem = {
    enable = lib.mkEnableOption "flakem, with a command for each of its names (switch-push, …)";

    package = lib.mkOption {
      type = lib.types.package;
      default = flake.packages.${pkgs.stdenv.hostPlatform.system}.default;
      defaultText = lib.literalExpression "flakem.packages.\${pkgs.stdenv.hostPlatform.system}.default";
      description = "The flakem package whose commands are installed.";
    };
  };

  config = lib.mkIf cfg.enable {
    environment.systemPackages = [ cfg.package ];
  };
}
