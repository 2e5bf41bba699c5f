// Read bandwidth of this machine with T threads: each thread sums its share of a 1 GiB buffer
// (far larger than any cache) with 256-bit loads; the best of several passes, in GB/s.
// Build: gcc -O3 -march=native -fopenmp membw.c -o membw; run: OMP_NUM_THREADS=2 ./membw
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    const size_t bytes = (size_t)1 << 30, n = bytes / sizeof(float);
    float *a = aligned_alloc(64, bytes);
    if (!a) return 1;
#pragma omp parallel for
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 7);
    double best = 0, sink = 0;
    for (int pass = 0; pass < 8; pass++) {
        double t0 = now(), total = 0;
#pragma omp parallel for reduction(+ : total)
        for (size_t i = 0; i < n; i += 32) {
            __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_load_ps(a + i), _mm256_load_ps(a + i + 8)),
                                     _mm256_add_ps(_mm256_load_ps(a + i + 16), _mm256_load_ps(a + i + 24)));
            float v[8];
            _mm256_storeu_ps(v, s);
            total += v[0] + v[7];
        }
        double gbs = bytes / (now() - t0) / 1e9;
        if (gbs > best) best = gbs;
        sink += total;
    }
    printf("%.2f\n", best);
    fprintf(stderr, "threads %d, checksum %g\n", omp_get_max_threads(), sink);
    free(a);
    return 0;
}
