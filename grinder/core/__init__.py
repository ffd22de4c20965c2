"""The pure decision core: strategy targets, the diff against resting orders, gates. No I/O, no clock."""
