"""Operations: backups and restores, and the pre-flight checks of `doctor`."""
