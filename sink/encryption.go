package sink

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nats-io/nats-server/v2/server"
)

// StoreEncryption encrypts the embedded server's whole JetStream store at
// rest (event streams, the checkpoint bucket, consumers and, in a cluster,
// the Raft logs), with nats-server's own store encryption.
type StoreEncryption struct {
	Cipher string // CipherChaCha (the default) or CipherAES
	Key    string
	// PrevKey, during a key rotation, is the key the store was written
	// with: nats-server re-encrypts what it recovers with Key.
	PrevKey string
}

// Store ciphers.
const (
	CipherChaCha = "chacha"
	CipherAES    = "aes"
)

// MinStoreKey is the shortest store key accepted, in bytes: nats-server
// uses the key as is, with no stretching.
const MinStoreKey = 32

// KeyCheckFile is the name, inside the store dir, of the file by which
// sluice recognises the store's key before nats-server opens anything.
const KeyCheckFile = "store-key.check"

// Errors of the store's key, wrapped with the fix.
var (
	ErrStoreKeyMismatch = errors.New("the key does not match the store")
	ErrStoreEncrypted   = errors.New("the store is encrypted")
)

// keyCheck is the key check file: a known text sealed with a key derived
// from the store key. nats-server, given a wrong key, only logs that it
// cannot decrypt a stream and carries on without it; sluice would then
// create the stream afresh over the old one. The check refuses first.
type keyCheck struct {
	Version int    `json:"version"`
	Salt    []byte `json:"salt"`
	Nonce   []byte `json:"nonce"`
	Sealed  []byte `json:"sealed"`
}

const keyCheckText = "sluice store key check"

func keyCheckAEAD(key string, salt []byte) (cipher.AEAD, error) {
	mac := hmac.New(sha256.New, []byte(key))
	mac.Write([]byte(keyCheckText + "\x00"))
	mac.Write(salt)
	block, err := aes.NewCipher(mac.Sum(nil))
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func newKeyCheck(key string) (keyCheck, error) {
	c := keyCheck{Version: 1, Salt: make([]byte, 16)}
	if _, err := rand.Read(c.Salt); err != nil {
		return keyCheck{}, err
	}
	aead, err := keyCheckAEAD(key, c.Salt)
	if err != nil {
		return keyCheck{}, err
	}
	c.Nonce = make([]byte, aead.NonceSize())
	if _, err := rand.Read(c.Nonce); err != nil {
		return keyCheck{}, err
	}
	c.Sealed = aead.Seal(nil, c.Nonce, []byte(keyCheckText), nil)
	return c, nil
}

func (c keyCheck) opens(key string) bool {
	aead, err := keyCheckAEAD(key, c.Salt)
	if err != nil || len(c.Nonce) != aead.NonceSize() {
		return false
	}
	plain, err := aead.Open(nil, c.Nonce, c.Sealed, nil)
	return err == nil && string(plain) == keyCheckText
}

func readKeyCheck(storeDir string) (*keyCheck, error) {
	path := filepath.Join(storeDir, KeyCheckFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nats.store_encryption: read the key check file: %w", err)
	}
	var c keyCheck
	if err := json.Unmarshal(b, &c); err != nil || c.Version != 1 {
		return nil, fmt.Errorf("nats.store_encryption: %s is not a sluice key check file: restore it from the backup of the store", path)
	}
	return &c, nil
}

// writeKeyCheck replaces the key check file atomically, so a crash leaves
// the old check or the new one.
func writeKeyCheck(storeDir, key string) error {
	c, err := newKeyCheck(key)
	if err != nil {
		return err
	}
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(storeDir, KeyCheckFile), append(b, '\n')); err != nil {
		return fmt.Errorf("nats.store_encryption: write the key check file: %w", err)
	}
	return nil
}

// storeStreams counts the streams of the store whose metadata is
// encrypted and those whose metadata is plaintext (nats-server keeps an
// encrypted stream's key in meta.key beside its meta.inf).
func storeStreams(storeDir string) (encrypted, plaintext int) {
	jsDir := filepath.Join(storeDir, "jetstream")
	accounts, _ := os.ReadDir(jsDir)
	for _, a := range accounts {
		streams, _ := os.ReadDir(filepath.Join(jsDir, a.Name(), "streams"))
		for _, st := range streams {
			dir := filepath.Join(jsDir, a.Name(), "streams", st.Name())
			if _, err := os.Stat(filepath.Join(dir, server.JetStreamMetaFile)); err != nil {
				continue
			}
			if _, err := os.Stat(filepath.Join(dir, server.JetStreamMetaFileKey)); err == nil {
				encrypted++
			} else {
				plaintext++
			}
		}
	}
	return encrypted, plaintext
}

// keyPlan is what StartServer does with the key check file.
type keyPlan int

const (
	keyAsIs        keyPlan = iota // nothing to write
	keyWriteBefore                // a new or plaintext store: record the key before nats-server encrypts
	keyWriteAfter                 // a rotation: record the new key once nats-server has re-encrypted
)

// CheckStoreKey tells whether the store in storeDir can be opened with
// enc (nil: no encryption), without changing anything: StartServer runs
// it before nats-server touches the store, and sluice check reports it.
func CheckStoreKey(storeDir string, enc *StoreEncryption) error {
	_, err := planStoreKey(storeDir, enc)
	return err
}

func planStoreKey(storeDir string, enc *StoreEncryption) (keyPlan, error) {
	check, err := readKeyCheck(storeDir)
	if err != nil {
		return keyAsIs, err
	}
	encrypted, _ := storeStreams(storeDir)
	if enc == nil {
		if check != nil || encrypted > 0 {
			return keyAsIs, fmt.Errorf("nats.store_encryption is not set, but %w in %s: set nats.store_encryption with the key it was written with "+
				"(sluice does not decrypt a store back to plaintext; for that, start with an empty nats.store_dir)", ErrStoreEncrypted, storeDir)
		}
		return keyAsIs, nil
	}
	if len(enc.Key) < MinStoreKey || enc.PrevKey != "" && len(enc.PrevKey) < MinStoreKey {
		return keyAsIs, fmt.Errorf("nats.store_encryption: a key must be at least %d bytes (e.g. openssl rand -hex 32)", MinStoreKey)
	}
	if check == nil {
		if encrypted > 0 {
			return keyAsIs, fmt.Errorf("nats.store_encryption: %w in %s, but its key check file %s is missing, so sluice cannot tell whether the key is right: "+
				"restore the file from the backup of the store (sluice writes it when it first encrypts a store)", ErrStoreEncrypted, storeDir, KeyCheckFile)
		}
		// nats-server encrypts a plaintext store as it recovers it.
		return keyWriteBefore, nil
	}
	switch {
	case check.opens(enc.Key):
		return keyAsIs, nil
	case enc.PrevKey != "" && check.opens(enc.PrevKey):
		return keyWriteAfter, nil
	case enc.PrevKey != "":
		return keyAsIs, fmt.Errorf("nats.store_encryption: %w in %s: neither the key nor the previous key (prev_key_env/prev_key_vault) is the one the store was written with; "+
			"nothing was changed: set prev_key_* to the store's current key", ErrStoreKeyMismatch, storeDir)
	default:
		return keyAsIs, fmt.Errorf("nats.store_encryption: %w in %s: the store was written with another key; nothing was changed: "+
			"set key_env/key_vault to the store's key, or to rotate keys set prev_key_env/prev_key_vault to the store's key and key_env/key_vault to the new one",
			ErrStoreKeyMismatch, storeDir)
	}
}

// encryptionOptions turns on nats-server's store encryption.
func encryptionOptions(opts *server.Options, enc *StoreEncryption) error {
	switch enc.Cipher {
	case CipherChaCha, "":
		opts.JetStreamCipher = server.ChaCha
	case CipherAES:
		opts.JetStreamCipher = server.AES
	default:
		return fmt.Errorf("nats.store_encryption.cipher %q: use chacha or aes", enc.Cipher)
	}
	opts.JetStreamKey, opts.JetStreamOldKey = enc.Key, enc.PrevKey
	return nil
}
