/* The compiled kernels of batched training (tuner/train/_kernels.py builds and loads them).

   adam_l1_step: the fused optimizer step.

   One Adam step per member of a stacked tensor, in one pass over its values: L2's gradient 2·λ₂·w
   added to the gradient, Adam's update as torch's fused kernel computes it (its bias corrections
   from each member's own step count), then L1's proximal step, sign(w)·max(|w| − λ₁·lr/d, 0), with
   d = √v̂ + ε the Adam denominator of that weight (prox_l1_'s rule). Torch's kernels take ten to
   fourteen passes over the weights for the same (the Adam kernel, the L2 term, the six of the
   proximal step).

   Built with -ffp-contract=off: no operation is fused into an FMA, so each rounds as torch's
   operations round theirs; sqrtf and the divisions are IEEE's, vectorized or not. */

#include <math.h>
#include <stdint.h>

/* The K members of one stacked tensor of n values per member, laid out member after member.
   steps: each member's step count (this step's included); l2g: each member's 2·λ₂ (NULL: no L2);
   l1: each member's λ₁ (NULL: no L1). */
void adam_l1_step(float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
                  int64_t n, int64_t K, const double *steps, const float *l2g, const float *l1,
                  double lr, double beta1, double beta2, double eps)
{
    const float b2 = (float)beta2, w1 = (float)(1.0 - beta1), w2 = (float)(1.0 - beta2);
    const float e = (float)eps;
    for (int64_t k = 0; k < K; k++) {
        float *restrict pk = p + k * n, *restrict mk = m + k * n, *restrict vk = v + k * n;
        const float *restrict gk = g + k * n;
        const double bias1 = 1.0 - pow(beta1, steps[k]), bias2_sqrt = sqrt(1.0 - pow(beta2, steps[k]));
        const float step_size = (float)(lr / bias1), c = (float)bias2_sqrt;
        const float a = l2g ? l2g[k] : 0.0f, t = l1 ? (float)(lr * l1[k]) : 0.0f;
        if (t > 0.0f) {
            for (int64_t i = 0; i < n; i++) {
                const float gi = gk[i] + a * pk[i];
                const float mi = mk[i] + w1 * (gi - mk[i]);
                const float vi = b2 * vk[i] + w2 * gi * gi;
                const float d = sqrtf(vi) / c + e;
                const float w = pk[i] - step_size * mi / d;
                const float shrunk = fabsf(w) - t / d;  /* a NaN stays a NaN, as torch's clamp keeps it */
                pk[i] = copysignf(shrunk > 0.0f || shrunk != shrunk ? shrunk : 0.0f, w);
                mk[i] = mi;
                vk[i] = vi;
            }
        } else {
            for (int64_t i = 0; i < n; i++) {
                const float gi = gk[i] + a * pk[i];
                const float mi = mk[i] + w1 * (gi - mk[i]);
                const float vi = b2 * vk[i] + w2 * gi * gi;
                pk[i] = pk[i] - step_size * mi / (sqrtf(vi) / c + e);
                mk[i] = mi;
                vk[i] = vi;
            }
        }
    }
}

/* ReLU then inverted dropout, in place on a hidden layer's product z: K members of n values each,
   member k's out = max(z, 0)·scale[k] where its unit is kept (its bits > cut[k]), else max(z, 0)·0.
   bits: one array of n per cohort (its members share the draws), cohort[k] member k's (_batched._mask's
   masks, bit for bit, applied as torch's relu then h·mask apply them: a NaN stays a NaN). */
void relu_dropout(float *restrict z, int64_t n, int64_t K, const float *const *bits, const int64_t *cohort,
                  const float *cut, const float *scale)
{
    for (int64_t k = 0; k < K; k++) {
        float *restrict zk = z + k * n;
        const float *restrict b = bits[cohort[k]];
        const float c = cut[k], s = scale[k];
        for (int64_t i = 0; i < n; i++) {
            const float r = zk[i] < 0.0f ? 0.0f : zk[i];
            zk[i] = b[i] > c ? r * s : r * 0.0f;
        }
    }
}

/* relu_dropout's gradient: g·scale[k] where the output is positive (the unit active and kept), else 0. */
void relu_dropout_grad(const float *restrict g, const float *restrict out, float *restrict gz, int64_t n,
                       int64_t K, const float *scale)
{
    for (int64_t k = 0; k < K; k++) {
        const float s = scale[k];
        const float *restrict gk = g + k * n, *restrict ok = out + k * n;
        float *restrict dk = gz + k * n;
        for (int64_t i = 0; i < n; i++)
            dk[i] = ok[i] > 0.0f ? gk[i] * s : 0.0f;
    }
}
