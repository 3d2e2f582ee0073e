/*
 * crc32c.h - CRC-32C (Castagnoli), the checksum of every journal record:
 * the CPU's crc32 instruction where it has one (SSE 4.2), a table where
 * it does not.  Both give the same value.
 */
#ifndef JQ_CRC32C_H
#define JQ_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t crc32c(const void *data, size_t len);

#endif
