package sigtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Key is a key pair generated in the test.
type Key struct {
	Signer crypto.Signer
	alg    string
}

var _ Signer = (*Key)(nil)

// NewKey generates a key: alg is "ecdsa-p256" (the default, what cosign
// generate-key-pair makes), "ecdsa-p384", "rsa-2048" or "ed25519".
func NewKey(alg string) (*Key, error) {
	var s crypto.Signer
	var err error
	switch alg {
	case "", "ecdsa-p256":
		alg = "ecdsa-p256"
		s, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ecdsa-p384":
		s, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "rsa-2048":
		s, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ed25519":
		_, s, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("sigtest: unknown key algorithm %q", alg)
	}
	if err != nil {
		return nil, err
	}
	return &Key{Signer: s, alg: alg}, nil
}

// MustKey is NewKey for tests.
func MustKey(tb testing.TB, alg string) *Key {
	tb.Helper()
	k, err := NewKey(alg)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// PublicKeyPEM is the public key as a PEM "PUBLIC KEY" block.
func (k *Key) PublicKeyPEM() string {
	der, err := x509.MarshalPKIXPublicKey(k.Signer.Public())
	if err != nil {
		panic(err) // generated keys always marshal
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// PrivateKeyPEM is the private key as PKCS#8 PEM (unencrypted).
func (k *Key) PrivateKeyPEM() string {
	der, err := x509.MarshalPKCS8PrivateKey(k.Signer)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// WritePublicKey writes the public key PEM to dir/name and returns the path.
func (k *Key) WritePublicKey(dir, name string) (string, error) {
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, []byte(k.PublicKeyPEM()), 0o644)
}

// hint is cosign's key hint: base64 SHA-256 of the PKIX public key.
func (k *Key) hint() string {
	der, _ := x509.MarshalPKIXPublicKey(k.Signer.Public())
	sum := sha256.Sum256(der)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// sign signs msg as cosign does with a key: SHA-256 for ECDSA (any curve)
// and RSA PKCS#1 v1.5, pure Ed25519.
func (k *Key) sign(msg []byte) ([]byte, error) {
	switch s := k.Signer.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(s, msg), nil
	case *rsa.PrivateKey:
		sum := sha256.Sum256(msg)
		return rsa.SignPKCS1v15(rand.Reader, s, crypto.SHA256, sum[:])
	case *ecdsa.PrivateKey:
		sum := sha256.Sum256(msg)
		return ecdsa.SignASN1(rand.Reader, s, sum[:])
	}
	return nil, fmt.Errorf("sigtest: unsupported key %T", k.Signer)
}

func (k *Key) dsse(statement []byte, _ bool) (*signed, error) {
	sig, err := k.sign(pae(MediaInToto, statement))
	if err != nil {
		return nil, err
	}
	return &signed{sig: sig, payload: statement, keyHint: k.hint()}, nil
}

func (k *Key) message(payload []byte) (*signed, error) {
	sig, err := k.sign(payload)
	if err != nil {
		return nil, err
	}
	return &signed{sig: sig, payload: payload, keyHint: k.hint()}, nil
}

// pae is DSSE's pre-authentication encoding.
func pae(payloadType string, payload []byte) []byte {
	return []byte(fmt.Sprintf("DSSEv1 %d %s %d %s", len(payloadType), payloadType, len(payload), payload))
}
