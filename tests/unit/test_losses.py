"""The distillation loss against values computed by hand (see the arithmetic in each test)."""

import math

import pytest
import torch

from stillhouse.distill.losses import distillation_loss, soft_kl

# z_s = [1, 0], z_t = [0, 1], T = 2:
#   softmax(z_t/T) = [1/(1+e^.5), e^.5/(1+e^.5)] = [0.37754067, 0.62245933]; softmax(z_s/T) is its mirror,
#   so KL = (0.62245933 - 0.37754067) * ln(e^.5) = 0.24491866 * 0.5 = 0.12245933 and T²·KL = 0.48983732.
#   CE(y=0, softmax(z_s)) = ln(1 + e^-1) = 0.31326169.
STUDENT = torch.tensor([[1.0, 0.0]])
TEACHER = torch.tensor([[0.0, 1.0]])
KL_T2 = 0.48983732
CE = 0.31326169


def test_soft_kl_includes_the_t_squared_factor():
    assert soft_kl(STUDENT, TEACHER, 2.0).item() == pytest.approx(KL_T2, abs=1e-6)
    # Without T², the value would be a quarter of it: the factor is there.
    assert soft_kl(STUDENT, TEACHER, 2.0).item() / 4 == pytest.approx(0.12245933, abs=1e-6)


def test_soft_kl_is_zero_when_student_matches_teacher():
    logits = torch.tensor([[0.3, -1.2, 2.0]])
    assert soft_kl(logits, logits, 3.0).item() == pytest.approx(0.0, abs=1e-7)


def test_labelled_row_mixes_ce_and_kl_with_alpha():
    loss = distillation_loss(STUDENT, torch.tensor([0]), TEACHER, alpha=0.5, temperature=2.0)
    assert loss.item() == pytest.approx(0.5 * CE + 0.5 * KL_T2, abs=1e-6)  # 0.40154950


def test_unlabelled_row_uses_the_kl_term_alone():
    loss = distillation_loss(STUDENT, torch.tensor([-1]), TEACHER, alpha=0.5, temperature=2.0)
    assert loss.item() == pytest.approx(KL_T2, abs=1e-6)  # not scaled by (1 - alpha)


def test_mixed_batch_is_the_mean_of_its_rows():
    loss = distillation_loss(STUDENT.repeat(2, 1), torch.tensor([0, -1]), TEACHER.repeat(2, 1), 0.5, 2.0)
    assert loss.item() == pytest.approx((0.5 * CE + 0.5 * KL_T2 + KL_T2) / 2, abs=1e-6)  # 0.44569341


def test_alpha_one_is_plain_cross_entropy_on_labelled_rows():
    loss = distillation_loss(STUDENT, torch.tensor([0]), TEACHER, alpha=1.0, temperature=2.0)
    assert loss.item() == pytest.approx(CE, abs=1e-6)


def test_without_teacher_logits_only_labelled_rows_count():
    logits = torch.tensor([[1.0, 0.0], [5.0, -5.0]])
    loss = distillation_loss(logits, torch.tensor([0, -1]), None, alpha=0.5, temperature=2.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    with pytest.raises(ValueError, match="no labelled rows"):
        distillation_loss(logits, torch.tensor([-1, -1]), None, alpha=0.5, temperature=2.0)


def test_gradient_pushes_student_toward_teacher():
    student = STUDENT.clone().requires_grad_(True)
    distillation_loss(student, torch.tensor([-1]), TEACHER, 0.5, 2.0).backward()
    # Teacher prefers class 1: descending the gradient raises the student's class-1 logit.
    assert student.grad[0, 1] < 0 < student.grad[0, 0]


def test_row_weights_scale_each_row_and_keep_the_row_count_as_denominator():
    labels = torch.tensor([0, -1])
    weighted = distillation_loss(STUDENT.repeat(2, 1), labels, TEACHER.repeat(2, 1), 0.5, 2.0,
                                 weights=torch.tensor([1.0, 0.3]))
    assert weighted.item() == pytest.approx((0.5 * CE + 0.5 * KL_T2 + 0.3 * KL_T2) / 2, abs=1e-6)  # 0.32996797
    # A batch of down-weighted rows alone is not renormalised back to full weight.
    alone = distillation_loss(STUDENT, torch.tensor([-1]), TEACHER, 0.5, 2.0, weights=torch.tensor([0.3]))
    assert alone.item() == pytest.approx(0.3 * KL_T2, abs=1e-6)


def test_embedding_cosine_is_one_minus_the_mean_cosine():
    from stillhouse.distill.losses import embedding_cosine

    student = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    teacher = torch.tensor([[2.0, 0.0], [1.0, 0.0], [4.0, 3.0]])  # cosines 1, 0, 24/25 (scale ignored)
    assert embedding_cosine(student, teacher).item() == pytest.approx((0.0 + 1.0 + 1 / 25) / 3)
    weighted = embedding_cosine(student, teacher, torch.tensor([1.0, 0.5, 2.0]))
    assert weighted.item() == pytest.approx((0.0 + 0.5 + 2 / 25) / 3)
