"""Cold-chain monitoring: pure tank watch rules and the Faust app that runs them."""
