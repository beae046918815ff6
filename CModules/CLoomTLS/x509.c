// Keys and X.509 certificates for LoomTLS through libcrypto: generate, parse, print,
// build and sign. Which names, extensions and lifetimes go into a certificate is decided
// in Swift (Sources/LoomTLS/CertificateAuthority.swift). See include/CLoomTLS.h.
#include "CLoomTLS.h"

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

void cloom_tls_free(void *pointer) { free(pointer); }

/// The contents of a memory BIO as a malloc'd NUL-terminated string; frees the BIO.
static char *bio_to_string(BIO *bio) {
    char *data = NULL;
    long length = BIO_get_mem_data(bio, &data);
    char *copy = length >= 0 ? malloc((size_t)length + 1) : NULL;
    if (copy) {
        if (length > 0) memcpy(copy, data, (size_t)length);
        copy[length] = 0;
    }
    BIO_free(bio);
    return copy;
}

// MARK: - keys

cloom_tls_key *cloom_tls_key_generate_p256(void) { return EVP_EC_gen("P-256"); }

/// A passphrase callback that refuses: an encrypted key fails to load instead of prompting.
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
    (void)buf, (void)size, (void)rwflag, (void)u;
    return 0;
}

cloom_tls_key *cloom_tls_key_parse_pem(const void *data, size_t length) {
    BIO *bio = BIO_new_mem_buf(data, (int)length);
    if (!bio) return NULL;
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    return key;
}

char *cloom_tls_key_pem(cloom_tls_key *key) {
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio) return NULL;
    if (!PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)) {
        BIO_free(bio);
        return NULL;
    }
    return bio_to_string(bio);
}

void cloom_tls_key_free(cloom_tls_key *key) { EVP_PKEY_free(key); }

// MARK: - certificates: facts

cloom_tls_cert *cloom_tls_cert_parse_pem(const void *data, size_t length) {
    BIO *bio = BIO_new_mem_buf(data, (int)length);
    if (!bio) return NULL;
    X509 *cert = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    return cert;
}

char *cloom_tls_cert_pem(cloom_tls_cert *cert) {
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio) return NULL;
    if (!PEM_write_bio_X509(bio, cert)) {
        BIO_free(bio);
        return NULL;
    }
    return bio_to_string(bio);
}

void cloom_tls_cert_free(cloom_tls_cert *cert) { X509_free(cert); }

/// Seconds since the epoch of an ASN1_TIME.
static int unix_time(const ASN1_TIME *time, int64_t *out) {
    struct tm tm;
    if (!time || !ASN1_TIME_to_tm(time, &tm)) return 0;
    // Days from civil (proleptic Gregorian), so no timegm/TZ dependence.
    int64_t y = (int64_t)tm.tm_year + 1900, m = tm.tm_mon + 1, d = tm.tm_mday;
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = era * 146097 + doe - 719468;
    *out = days * 86400 + tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec;
    return 1;
}

int cloom_tls_cert_times(const cloom_tls_cert *cert, int64_t *not_before, int64_t *not_after) {
    return unix_time(X509_get0_notBefore(cert), not_before) && unix_time(X509_get0_notAfter(cert), not_after);
}

int cloom_tls_cert_basic_constraints(cloom_tls_cert *cert, long *pathlen) {
    uint32_t flags = X509_get_extension_flags(cert);  // also caches the extensions
    *pathlen = X509_get_pathlen(cert);
    if (!(flags & EXFLAG_BCONS)) return -1;
    return (flags & EXFLAG_CA) ? 1 : 0;
}

char *cloom_tls_cert_subject(const cloom_tls_cert *cert) {
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio) return NULL;
    unsigned long flags = XN_FLAG_SEP_CPLUS_SPC | XN_FLAG_FN_SN | (ASN1_STRFLGS_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
    if (X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, flags) < 0) {
        BIO_free(bio);
        return NULL;
    }
    return bio_to_string(bio);
}

char *cloom_tls_cert_serial_hex(const cloom_tls_cert *cert) {
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    if (!bn) return NULL;
    char *hex = BN_bn2hex(bn);
    BN_free(bn);
    if (!hex) return NULL;
    size_t length = strlen(hex);
    char *copy = malloc(length + 1);
    if (copy) {
        for (size_t i = 0; i <= length; i++) copy[i] = (hex[i] >= 'A' && hex[i] <= 'F') ? hex[i] + 32 : hex[i];
    }
    OPENSSL_free(hex);
    return copy;
}

int cloom_tls_cert_fingerprint(const cloom_tls_cert *cert, uint8_t out[32]) {
    unsigned int length = 0;
    return X509_digest(cert, EVP_sha256(), out, &length) && length == 32;
}

char *cloom_tls_cert_uri(const cloom_tls_cert *cert, int index) {
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (!names) return NULL;
    char *result = NULL;
    int seen = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(names) && !result; i++) {
        const GENERAL_NAME *name = sk_GENERAL_NAME_value(names, i);
        if (name->type != GEN_URI) continue;
        if (seen++ != index) continue;
        const ASN1_IA5STRING *uri = name->d.uniformResourceIdentifier;
        int length = ASN1_STRING_length(uri);
        result = malloc((size_t)length + 1);
        if (result) {
            memcpy(result, ASN1_STRING_get0_data(uri), (size_t)length);
            result[length] = 0;
        }
    }
    GENERAL_NAMES_free(names);
    return result;
}

int cloom_tls_cert_key_matches(cloom_tls_cert *cert, cloom_tls_key *key) {
    return X509_check_private_key(cert, key) == 1;
}

long cloom_tls_cert_verify(cloom_tls_cert *ca, cloom_tls_cert *leaf) {
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    long result = X509_V_ERR_UNSPECIFIED;
    if (store && ctx && X509_STORE_add_cert(store, ca) && X509_STORE_CTX_init(ctx, store, leaf, NULL)) {
        result = X509_verify_cert(ctx) == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
    }
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return result;
}

// MARK: - certificates: building

cloom_tls_cert *cloom_tls_cert_new(cloom_tls_key *subject_key, int64_t not_before, int64_t not_after) {
    X509 *cert = X509_new();
    BIGNUM *serial = BN_new();
    int ok = cert && serial && X509_set_version(cert, X509_VERSION_3)
        && BN_rand(serial, 128, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY)
        && BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert))
        && ASN1_TIME_set(X509_getm_notBefore(cert), (time_t)not_before)
        && ASN1_TIME_set(X509_getm_notAfter(cert), (time_t)not_after) && X509_set_pubkey(cert, subject_key);
    BN_free(serial);
    if (!ok) {
        X509_free(cert);
        return NULL;
    }
    return cert;
}

int cloom_tls_cert_add_subject(cloom_tls_cert *cert, const char *field, const char *value) {
    return X509_NAME_add_entry_by_txt(
        X509_get_subject_name(cert), field, MBSTRING_UTF8, (const unsigned char *)value, -1, -1, 0);
}

int cloom_tls_cert_add_extension(cloom_tls_cert *cert, cloom_tls_cert *issuer, const char *name, const char *value) {
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer ? issuer : cert, cert, NULL, NULL, 0);
    X509V3_set_ctx_nodb(&ctx);
    X509_EXTENSION *extension = X509V3_EXT_nconf(NULL, &ctx, name, value);
    if (!extension) return 0;
    int ok = X509_add_ext(cert, extension, -1);
    X509_EXTENSION_free(extension);
    return ok;
}

int cloom_tls_cert_sign(cloom_tls_cert *cert, cloom_tls_cert *issuer, cloom_tls_key *issuer_key) {
    return X509_set_issuer_name(cert, X509_get_subject_name(issuer ? issuer : cert))
        && X509_sign(cert, issuer_key, EVP_sha256()) > 0;
}
