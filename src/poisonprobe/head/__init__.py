"""The victim: a multinomial linear head on frozen features.

objective (LinearHead, THE objective, its gradients) <- curvature (Hessian products, CG)
<- solvers (Newton, L-BFGS, SGD) <- train (train_head); config holds the recipe (VictimConfig),
cv picks scikit-learn's C on a validation split.
"""
