//go:build tools

// Package vaultbin pins the Vault server the tests build (make vault).
package vaultbin

import _ "github.com/hashicorp/vault"
